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

    /// <summary>
    /// Opens <paramref name="count"/> connections spread over <paramref name="targets"/>, <paramref name="parallel"/> at a
    /// time. A connection that fails is not retried: it is left out and its failure recorded in <see cref="Failures"/>.
    /// </summary>
    public static async Task<IdleConnections> OpenAsync(NetworkNamespace client, IReadOnlyList<IPEndPoint> targets, int count, int parallel, CancellationToken cancellationToken)
    {
        var sockets = new Socket?[count];
        var answers = new string?[count];
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var next = -1;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // 2 minutes and 15 ms a connection: 10,000 take about a second here, but 90 s in a TCG VM (DrainVmBench).
        timeout.CancelAfter(TimeSpan.FromMinutes(2) + (count * TimeSpan.FromMilliseconds(15)));
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
                    try
                    {
                        await socket.ConnectAsync(target, timeout.Token);
                        await socket.SendAsync(Request, SocketFlags.None, timeout.Token);
                        answers[i] = await ReadResponseBodyAsync(socket, buffer, timeout.Token);
                        sockets[i] = socket;
                    }
                    catch (Exception e) when (e is SocketException or IOException && !timeout.IsCancellationRequested)
                    {
                        failures.Enqueue($"{socket.LocalEndPoint?.ToString() ?? "(unbound)"} -> {target}: {e.Message}");
                        socket.Dispose();
                    }
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

        var answeredBy = answers.OfType<string>().GroupBy(a => a.Split(' ')[0]).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return new IdleConnections([.. sockets.OfType<Socket>()], answeredBy) { Failures = [.. failures] };
    }

    /// <summary>Connections that could not be opened and answered, one line each: local and remote end point, and the error.</summary>
    public IReadOnlyList<string> Failures { get; private init; } = [];

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

    // The echo app answers with a short body, chunked or with a Content-Length; read until the response is complete.
    private static async Task<string> ReadResponseBodyAsync(Socket socket, byte[] buffer, CancellationToken cancellationToken)
    {
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                throw new IOException("The response is larger than expected.");
            }

            var read = await socket.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                throw new IOException("The server closed an idle connection before answering its first request.");
            }

            length += read;
            if (TryParse(Encoding.ASCII.GetString(buffer, 0, length)) is { } body)
            {
                return body;
            }
        }
    }

    /// <summary>The body of a complete response, null while incomplete.</summary>
    internal static string? TryParse(string text)
    {
        var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (headEnd < 0)
        {
            return null;
        }

        if (!text.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal))
        {
            throw new IOException($"Unexpected response: {text.Split('\r')[0]}");
        }

        var headers = text[..headEnd].Split("\r\n");
        var rest = text[(headEnd + 4)..];
        if (headers.FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)) is { } header)
        {
            var bodyLength = int.Parse(header["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            return rest.Length >= bodyLength ? rest[..bodyLength] : null;
        }

        // Chunked: size line, data, CRLF, ... until the zero-size chunk and the blank line after it.
        var body = new StringBuilder();
        var position = 0;
        while (true)
        {
            var lineEnd = rest.IndexOf("\r\n", position, StringComparison.Ordinal);
            if (lineEnd < 0)
            {
                return null;
            }

            var size = Convert.ToInt32(rest[position..lineEnd].Split(';')[0].Trim(), 16);
            if (size == 0)
            {
                return rest.IndexOf("\r\n", lineEnd + 2, StringComparison.Ordinal) >= 0 ? body.ToString() : null;
            }

            if (rest.Length < lineEnd + 2 + size + 2)
            {
                return null;
            }

            body.Append(rest, lineEnd + 2, size);
            position = lineEnd + 2 + size + 2;
        }
    }
}
