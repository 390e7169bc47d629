using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Hosting;

namespace Switchover.Tests;

/// <summary>The readiness request on a plain socket, against a real loopback listener that answers as told.</summary>
public sealed class StatusLineProbeTests
{
    [Fact(Timeout = 10000)]
    public async Task An_answer_is_read_by_its_status_line_and_the_request_asks_for_the_path_and_the_connection_to_close()
    {
        await using var server = Server.Answering("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", closeAfter: true);
        var answer = await StatusLineProbe.GetAsync(server.Endpoint, tls: false, "/ready?x=1", null, CancellationToken.None);

        Assert.Equal(StatusLineAnswer.Answered(200), answer);
        var request = await server.Request;
        Assert.StartsWith("GET /ready?x=1 HTTP/1.1\r\n", request, StringComparison.Ordinal);
        Assert.Contains($"\r\nHost: 127.0.0.1:{server.Endpoint.Port}\r\n", request, StringComparison.Ordinal);
        Assert.Contains("\r\nConnection: close\r\n", request, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\n", request, StringComparison.Ordinal);
    }

    [Theory(Timeout = 10000)]
    [InlineData("HTTP/1.1 503 Service Unavailable\r\n\r\n", 503)]
    [InlineData("HTTP/1.0 404 Not Found\r\n\r\n", 404)]
    [InlineData("HTTP/1.1 301 \r\nLocation: /x\r\n\r\n", 301)]
    public async Task The_status_code_is_what_the_server_sent(string response, int status)
    {
        await using var server = Server.Answering(response, closeAfter: true);
        Assert.Equal(status, (await StatusLineProbe.GetAsync(server.Endpoint, tls: false, "/", null, CancellationToken.None)).Status);
    }

    [Fact(Timeout = 10000)]
    public async Task An_http2_only_endpoint_answering_with_a_frame_is_told_apart_so_that_it_is_asked_in_http2()
    {
        // What Kestrel sends an HTTP/1.1 request on an HTTP/2-only endpoint: a GOAWAY frame (type 7), PROTOCOL_ERROR.
        byte[] goAway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        await using var server = Server.Answering(goAway, closeAfter: true);
        var answer = await StatusLineProbe.GetAsync(server.Endpoint, tls: false, "/", null, CancellationToken.None);

        Assert.True(answer.NotHttp11, answer.ToString());
        Assert.Null(answer.Status);
    }

    [Fact(Timeout = 10000)]
    public async Task A_server_that_keeps_the_connection_open_after_its_answer_does_not_hold_the_probe()
    {
        await using var server = Server.Answering("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial", closeAfter: false);
        var answer = await StatusLineProbe.GetAsync(server.Endpoint, tls: false, "/", null, CancellationToken.None);
        Assert.Equal(200, answer.Status);
    }

    [Fact(Timeout = 10000)]
    public async Task A_refused_connection_is_a_failure_that_names_the_endpoint()
    {
        using var reserved = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        reserved.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var endpoint = (IPEndPoint)reserved.LocalEndPoint!;

        var answer = await StatusLineProbe.GetAsync(endpoint, tls: false, "/", null, CancellationToken.None);

        Assert.False(answer.NotHttp11);
        Assert.Contains($"connecting to {endpoint} failed", answer.Failure, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("HTTP/1.1 abc OK")]
    [InlineData("HTTP/1.1 20")]
    [InlineData("HTTP/1.1 099 Low")]
    public void A_status_line_without_a_status_code_is_a_failure(string line)
    {
        var answer = StatusLineProbe.Parse(Encoding.ASCII.GetBytes(line));
        Assert.Null(answer.Status);
        Assert.False(answer.NotHttp11);
        Assert.Contains("has no status code", answer.Failure, StringComparison.Ordinal);
    }

    /// <summary>Accepts one connection, reads the request head, sends the answer and (when told) closes.</summary>
    private sealed class Server : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly TaskCompletionSource<string> _request = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _stop = new(TimeSpan.FromSeconds(10));
        private Task _serving = Task.CompletedTask;

        public IPEndPoint Endpoint => (IPEndPoint)_listener.LocalEndpoint;

        public Task<string> Request => _request.Task;

        public static Server Answering(string response, bool closeAfter) => Answering(Encoding.ASCII.GetBytes(response), closeAfter);

        public static Server Answering(byte[] response, bool closeAfter)
        {
            var server = new Server();
            server._listener.Start();
            server._serving = server.ServeAsync(response, closeAfter);
            return server;
        }

        private async Task ServeAsync(byte[] response, bool closeAfter)
        {
            using var client = await _listener.AcceptTcpClientAsync(_stop.Token);
            var stream = client.GetStream();
            var head = new StringBuilder();
            var buffer = new byte[4096];
            while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                var read = await stream.ReadAsync(buffer, _stop.Token);
                if (read == 0)
                {
                    break;
                }

                head.Append(Encoding.ASCII.GetString(buffer, 0, read));
            }

            _request.TrySetResult(head.ToString());
            await stream.WriteAsync(response, _stop.Token);
            if (!closeAfter)
            {
                await Task.Delay(Timeout.Infinite, _stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            try
            {
                await _serving;
            }
            catch (OperationCanceledException)
            {
            }

            _listener.Stop();
            _stop.Dispose();
        }
    }
}
