using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab.Tests;

/// <summary>What <see cref="TinyHttpServer"/> does with each request.</summary>
public enum ServerBehavior
{
    /// <summary>200 with a Content-Length body; honours <c>Connection: close</c>.</summary>
    Ok,

    /// <summary>200 with the body sent in chunks (with an extension and a trailer).</summary>
    Chunked,

    /// <summary>200, but every third response on a connection says <c>Connection: close</c> and the server closes.</summary>
    CloseEveryThirdResponse,

    /// <summary>Reads the request, then closes the connection (FIN) without answering.</summary>
    CloseAfterRequest,

    /// <summary>500 with a body.</summary>
    Status500,

    /// <summary>Reads the request, then resets the connection (SO_LINGER 0 and close: RST).</summary>
    Reset,

    /// <summary>Reads the request and never answers.</summary>
    NeverRespond,

    /// <summary>Answers with bytes that are not HTTP.</summary>
    Garbage,

    /// <summary>
    /// 200, but after every second response on a connection the server closes it (FIN) without having said
    /// <c>Connection: close</c>, as a server does with a connection left idle past its keep-alive timeout.
    /// </summary>
    CloseSilentlyEverySecondResponse,
}

/// <summary>
/// A minimal HTTP/1.1 server for the tests, listening on a socket created inside a namespace on [::]:0 (dual-stack, so
/// it is reachable on every IPv4 and IPv6 address of the namespace, loopback included).
/// </summary>
internal sealed class TinyHttpServer : TinyServer
{
    private readonly ServerBehavior _behavior;
    private readonly byte[] _body;
    private long _requests;

    private TinyHttpServer(NetworkNamespace ns, ServerBehavior behavior, string body)
        : base(ns)
    {
        _behavior = behavior;
        _body = Encoding.UTF8.GetBytes(body);
        StartAccepting();
    }

    public long Requests => Interlocked.Read(ref _requests);

    public static TinyHttpServer Start(NetworkNamespace ns, ServerBehavior behavior = ServerBehavior.Ok, string body = "hello") =>
        new(ns, behavior, body);

    protected override async Task ServeAsync(Socket connection)
    {
        var buffer = new byte[8192];
        var length = 0;
        var served = 0;
        var keep = false;
        try
        {
            while (!Stopping.IsCancellationRequested)
            {
                var end = buffer.AsSpan(0, length).IndexOf("\r\n\r\n"u8);
                if (end < 0)
                {
                    var received = await connection.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, Stopping);
                    if (received == 0)
                    {
                        return;
                    }

                    length += received;
                    continue;
                }

                var request = Encoding.ASCII.GetString(buffer, 0, end);
                buffer.AsSpan(end + 4, length - end - 4).CopyTo(buffer);
                length -= end + 4;
                Interlocked.Increment(ref _requests);
                served++;
                var clientWantsClose = request.Contains("connection: close", StringComparison.OrdinalIgnoreCase);
                switch (_behavior)
                {
                    case ServerBehavior.CloseAfterRequest:
                        connection.Shutdown(SocketShutdown.Both);
                        return;
                    case ServerBehavior.Reset:
                        connection.LingerState = new LingerOption(true, 0);
                        return;
                    case ServerBehavior.NeverRespond:
                        keep = true;
                        Hold(connection);

                        return;
                    case ServerBehavior.Garbage:
                        await connection.SendAsync("SSH-2.0-OpenSSH_9.2\r\n\r\n"u8.ToArray(), SocketFlags.None);
                        return;
                    default:
                        var close = clientWantsClose || (_behavior == ServerBehavior.CloseEveryThirdResponse && served % 3 == 0);
                        await connection.SendAsync(Response(close), SocketFlags.None);
                        if (close || (_behavior == ServerBehavior.CloseSilentlyEverySecondResponse && served % 2 == 0))
                        {
                            connection.Shutdown(SocketShutdown.Send);
                            return;
                        }

                        break;
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // The client went away or the server is stopping.
        }
        finally
        {
            if (!keep)
            {
                connection.Dispose();
            }
        }
    }

    private byte[] Response(bool close)
    {
        var connectionHeader = close ? "Connection: close\r\n" : "";
        if (_behavior == ServerBehavior.Status500)
        {
            return Encoding.ASCII.GetBytes($"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n{connectionHeader}\r\noops!");
        }

        if (_behavior == ServerBehavior.Chunked)
        {
            var chunked = new StringBuilder($"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{connectionHeader}\r\n");
            var body = Encoding.UTF8.GetString(_body);
            for (var i = 0; i < body.Length; i += 3)
            {
                var piece = body.Substring(i, Math.Min(3, body.Length - i));
                chunked.Append($"{piece.Length:x}{(i == 0 ? ";name=value" : "")}\r\n{piece}\r\n");
            }

            return Encoding.ASCII.GetBytes(chunked.Append("0\r\nX-Checksum: none\r\n\r\n").ToString());
        }

        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {_body.Length}\r\nContent-Type: text/plain\r\n{connectionHeader}\r\n");
        return [.. head, .. _body];
    }
}
