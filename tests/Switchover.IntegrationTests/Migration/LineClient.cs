using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Lab;

namespace Switchover.IntegrationTests.Migration;

/// <summary>A line-oriented TCP client with a socket made in a given namespace; every read is bounded in time.</summary>
internal sealed class LineClient : IDisposable
{
    private static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(10);
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private LineClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, Encoding.ASCII);
    }

    /// <summary>Connects from a socket made in <paramref name="from"/>, bound to <paramref name="source"/> when given.</summary>
    public static async Task<LineClient> ConnectAsync(NetworkNamespace from, IPEndPoint to, CancellationToken cancellationToken, IPEndPoint? source = null)
    {
        var socket = from.CreateSocket(to.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (source is not null)
            {
                socket.Bind(source);
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ReadTimeout);
            await socket.ConnectAsync(to, timeout.Token);
            return new LineClient(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public async Task<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ReadTimeout);
        return await _reader.ReadLineAsync(timeout.Token) ?? throw new EndOfStreamException("The server closed the connection.");
    }

    public async Task<string> AskAsync(string line, CancellationToken cancellationToken)
    {
        await SendAsync(line, cancellationToken);
        return await ReadLineAsync(cancellationToken);
    }

    public async Task SendAsync(string line, CancellationToken cancellationToken) =>
        await _stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken);

    /// <summary>Reads exactly <paramref name="count"/> characters of bulk data, checking the server's pattern.</summary>
    public async Task<long> ReadBulkAsync(int count, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(60));
        var buffer = new char[16 * 1024];
        long read = 0;
        while (read < count)
        {
            var n = await _reader.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, count - read)), timeout.Token);
            if (n == 0)
            {
                throw new EndOfStreamException($"Bulk data ended after {read} of {count} bytes.");
            }

            for (var i = 0; i < n; i++)
            {
                if (buffer[i] != (char)('a' + ((read + i) % 26)))
                {
                    throw new InvalidDataException($"Bulk data corrupt at byte {read + i}.");
                }
            }

            read += n;
        }

        return read;
    }

    public void Dispose()
    {
        _reader.Dispose();
        _stream.Dispose();
        _socket.Dispose();
    }
}

/// <summary>A tiny line server in a namespace: greets "NAME sees REMOTE" and echoes lines back. Bounded: stops with its token.</summary>
internal sealed class GreeterServer : IDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();

    public GreeterServer(NetworkNamespace host, IPEndPoint endpoint, string name, ProtocolType protocol = ProtocolType.Tcp)
    {
        Name = name;
        _listener = host.CreateSocket(endpoint.AddressFamily, protocol == ProtocolType.Tcp ? SocketType.Stream : SocketType.Dgram, protocol);
        _listener.Bind(endpoint);
        if (protocol == ProtocolType.Tcp)
        {
            _listener.Listen();
            _ = AcceptLoopAsync();
        }
        else
        {
            _ = UdpLoopAsync();
        }
    }

    public string Name { get; }

    public List<string> Seen { get; } = [];

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        _stop.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using var _ = client;
        var remote = client.RemoteEndPoint!.ToString()!;
        lock (Seen)
        {
            Seen.Add(remote);
        }

        await using var stream = new NetworkStream(client);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"{Name} sees {remote}\r\n"), _stop.Token);
            while (await reader.ReadLineAsync(_stop.Token) is { } line)
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"{Name}: {line}\r\n"), _stop.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException)
        {
            // The test is over or the client went away.
        }
    }

    private async Task UdpLoopAsync()
    {
        var buffer = new byte[2048];
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var from = _listener.AddressFamily == AddressFamily.InterNetworkV6 ? (EndPoint)new IPEndPoint(IPAddress.IPv6Any, 0) : new IPEndPoint(IPAddress.Any, 0);
                var result = await _listener.ReceiveFromAsync(buffer, SocketFlags.None, from, _stop.Token);
                var reply = Encoding.ASCII.GetBytes($"{Name} sees {result.RemoteEndPoint}");
                await _listener.SendToAsync(reply, SocketFlags.None, result.RemoteEndPoint, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
        }
    }
}

internal static class LineClientExtensions
{
    /// <summary>Asks for n bytes of bulk data and returns how many arrived intact (the closing line must confirm them).</summary>
    public static async Task<long> AskBulkAsync(this LineClient client, int count, CancellationToken cancellationToken)
    {
        await client.SendAsync($"BULK {count}", cancellationToken);
        var read = await client.ReadBulkAsync(count, cancellationToken);
        var done = await client.ReadLineAsync(cancellationToken);
        return done == $"250 sent {count} bytes" ? read : throw new InvalidDataException($"Unexpected line after the bulk data: '{done}'.");
    }
}
