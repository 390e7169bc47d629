using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab.Tests;

/// <summary>The response parser, fed over a Unix socket pair (no root needed), whole and cut into small pieces.</summary>
public sealed class HttpResponseReaderTests
{
    private const string Sequence =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
        + "HTTP/1.1 200 OK\r\ntransfer-ENCODING: Chunked\r\n\r\n3;ext=1\r\nhel\r\nA\r\nlo chunked\r\n0\r\nX-Trailer: yes\r\n\r\n"
        + "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nDate: today\r\n\r\n"
        + "HTTP/1.1 503 Service Unavailable\r\nCONTENT-length:  4 \r\nConnection: keep-alive, Close\r\n\r\ngone";

    [Theory(Timeout = 30_000)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(100_000)]
    public async Task Reads_length_chunked_interim_and_closing_responses_however_the_bytes_arrive(int pieceSize)
    {
        var (client, server) = await ConnectedPairAsync();
        using (client)
        using (server)
        using (var reader = new HttpResponseReader())
        {
            var sending = SendInPiecesAsync(server, Sequence, pieceSize);

            await reader.ReadAsync(client, CancellationToken.None);
            Assert.Equal((200, "hello", false), (reader.StatusCode, Text(reader), reader.ConnectionClose));

            await reader.ReadAsync(client, CancellationToken.None);
            Assert.Equal((200, "hello chunked", false), (reader.StatusCode, Text(reader), reader.ConnectionClose));

            await reader.ReadAsync(client, CancellationToken.None);
            Assert.Equal((204, "", false), (reader.StatusCode, Text(reader), reader.ConnectionClose));

            await reader.ReadAsync(client, CancellationToken.None);
            Assert.Equal((503, "gone", true), (reader.StatusCode, Text(reader), reader.ConnectionClose));
            await sending;
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task A_body_without_length_runs_to_the_end_of_the_connection()
    {
        var (client, server) = await ConnectedPairAsync();
        using var reader = new HttpResponseReader();
        using (client)
        {
            await SendInPiecesAsync(server, "HTTP/1.0 200 OK\r\n\r\nuntil the end", 4);
            server.Shutdown(SocketShutdown.Send);
            server.Dispose();

            await reader.ReadAsync(client, CancellationToken.None);
        }

        Assert.Equal((200, "until the end", true), (reader.StatusCode, Text(reader), reader.ConnectionClose));
    }

    [Theory(Timeout = 30_000)]
    [InlineData("", "before any byte")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Le", "response header")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "5 of 10 body bytes")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "middle of a chunk")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "chunk header")]
    public async Task A_connection_that_ends_early_is_an_end_of_stream(string partial, string expected)
    {
        var (client, server) = await ConnectedPairAsync();
        using var reader = new HttpResponseReader();
        using var clientSocket = client;
        await SendInPiecesAsync(server, partial, 1000);
        server.Dispose();

        var e = await Assert.ThrowsAsync<HttpEndOfStreamException>(() => reader.ReadAsync(client, CancellationToken.None).AsTask());

        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("HTTP/2 200\r\n\r\n", "status line")]
    [InlineData("HTTP/1.1 2x0 OK\r\n\r\n", "status line")]
    [InlineData("SSH-2.0-OpenSSH\r\n\r\n", "status line")]
    [InlineData("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n", "CRLF")]
    public async Task A_malformed_response_is_a_protocol_error(string response, string expected)
    {
        var (client, server) = await ConnectedPairAsync();
        using (client)
        using (server)
        using (var reader = new HttpResponseReader())
        {
            await SendInPiecesAsync(server, response, 1000);

            var e = await Assert.ThrowsAsync<HttpProtocolException>(() => reader.ReadAsync(client, CancellationToken.None).AsTask());

            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task A_large_body_and_large_headers_grow_the_buffers()
    {
        var body = new string('b', 300_000);
        var header = new string('h', 40_000);
        var (client, server) = await ConnectedPairAsync();
        using (client)
        using (server)
        using (var reader = new HttpResponseReader())
        {
            var sending = SendInPiecesAsync(server, $"HTTP/1.1 200 OK\r\nX-Big: {header}\r\nContent-Length: {body.Length}\r\n\r\n{body}", 65_536);

            await reader.ReadAsync(client, CancellationToken.None);
            await sending;

            Assert.Equal(body, Text(reader));
        }
    }

    private static string Text(HttpResponseReader reader) => Encoding.UTF8.GetString(reader.Body);

    private static async Task SendInPiecesAsync(Socket socket, string text, int pieceSize)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        for (var offset = 0; offset < bytes.Length; offset += pieceSize)
        {
            await socket.SendAsync(bytes.AsMemory(offset, Math.Min(pieceSize, bytes.Length - offset)), SocketFlags.None);
            if (pieceSize < 1000)
            {
                await Task.Delay(1); // let the reader see this piece on its own
            }
        }
    }

    private static async Task<(Socket Client, Socket Server)> ConnectedPairAsync()
    {
        var path = Path.Combine(Path.GetTempPath(), $"so-lab-{Guid.NewGuid():N}.sock");
        var endPoint = new UnixDomainSocketEndPoint(path);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(endPoint);
        listener.Listen();
        var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        var accept = listener.AcceptAsync();
        await client.ConnectAsync(endPoint);
        var server = await accept;
        File.Delete(path);
        return (client, server);
    }
}
