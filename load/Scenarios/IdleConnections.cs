using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Lab;

namespace Switchover.Load.Scenarios;

/// <summary>How the held connections ended once the generation they were on went away.</summary>
internal sealed record IdleFates(int ClosedGracefully, int Reset, int StillOpen, int UnexpectedData);

/// <summary>
/// Many idle HTTP/1.1 keep-alive connections from the client namespace to the public port, each having been answered once
/// (so each is known to be on the generation that answered it), held open until disposed.
/// </summary>
internal sealed class IdleConnections : IAsyncDisposable
{
    private static readonly byte[] Request = "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"u8.ToArray();
    private readonly List<Socket> _sockets;

    private IdleConnections(List<Socket> sockets, IReadOnlyDictionary<string, int> answeredBy)
    {
        _sockets = sockets;
        AnsweredBy = answeredBy;
    }

    public int Count => _sockets.Count;

    /// <summary>How many connections each body prefix ("v3") answered.</summary>
    public IReadOnlyDictionary<string, int> AnsweredBy { get; }

    /// <summary>Opens <paramref name="count"/> connections spread over <paramref name="targets"/>, <paramref name="parallel"/> at a time.</summary>
    public static async Task<IdleConnections> OpenAsync(NetworkNamespace client, IReadOnlyList<IPEndPoint> targets, int count, int parallel, CancellationToken cancellationToken)
    {
        var sockets = new Socket[count];
        var answers = new string[count];
        var next = -1;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromMinutes(2));
        try
        {
            await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Task.Run(async () =>
            {
                var buffer = new byte[1024];
                int i;
                while ((i = Interlocked.Increment(ref next)) < count)
                {
                    var target = targets[i % targets.Count];
                    var socket = client.CreateSocket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    sockets[i] = socket;
                    await socket.ConnectAsync(target, timeout.Token);
                    await socket.SendAsync(Request, SocketFlags.None, timeout.Token);
                    answers[i] = await ReadResponseBodyAsync(socket, buffer, timeout.Token);
                }
            }, timeout.Token)));
        }
        catch
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }

            throw;
        }

        var answeredBy = answers.GroupBy(a => a.Split(' ')[0]).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return new IdleConnections([.. sockets], answeredBy);
    }

    /// <summary>Looks at every connection without blocking: closed by the server (FIN), reset, or still open.</summary>
    public IdleFates Survey()
    {
        int graceful = 0, reset = 0, open = 0, data = 0;
        var buffer = new byte[256];
        foreach (var socket in _sockets)
        {
            try
            {
                if (!socket.Poll(0, SelectMode.SelectRead))
                {
                    open++;
                }
                else if (socket.Receive(buffer) == 0)
                {
                    graceful++;
                }
                else
                {
                    data++;
                }
            }
            catch (SocketException)
            {
                reset++;
            }
        }

        return new IdleFates(graceful, reset, open, data);
    }

    public ValueTask DisposeAsync()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        _sockets.Clear();
        return ValueTask.CompletedTask;
    }

    // The echo app answers with a short Content-Length body; read the head, then exactly that many bytes.
    private static async Task<string> ReadResponseBodyAsync(Socket socket, byte[] buffer, CancellationToken cancellationToken)
    {
        var length = 0;
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                throw new IOException("The server closed an idle connection before answering its first request.");
            }

            length += read;
            var text = Encoding.ASCII.GetString(buffer, 0, length);
            var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headEnd < 0)
            {
                if (length == buffer.Length)
                {
                    throw new IOException("The response head is larger than expected.");
                }

                continue;
            }

            if (!text.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal))
            {
                throw new IOException($"Unexpected response: {text.Split('\r')[0]}");
            }

            var header = text[..headEnd].Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                ?? throw new IOException("The response has no Content-Length.");
            var bodyLength = int.Parse(header["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            if (length >= headEnd + 4 + bodyLength)
            {
                return text.Substring(headEnd + 4, bodyLength);
            }
        }
    }
}
