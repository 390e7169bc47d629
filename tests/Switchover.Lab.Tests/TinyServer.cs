using System.Net;
using System.Net.Sockets;

namespace Switchover.Lab.Tests;

/// <summary>
/// What the tiny test servers share: a dual-stack listener on a kernel-chosen port inside a namespace, an accept loop
/// that hands each connection to <see cref="ServeAsync"/>, and sockets held open on purpose, all closed on dispose.
/// </summary>
internal abstract class TinyServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _held = [];
    private Task _acceptLoop = Task.CompletedTask;
    private long _connections;

    protected TinyServer(NetworkNamespace ns)
    {
        _listener = ns.CreateSocket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        _listener.DualMode = true;
        _listener.Bind(new IPEndPoint(IPAddress.IPv6Any, 0));
        _listener.Listen(1024);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
    }

    public int Port { get; }

    /// <summary>The listening socket (to hand to a steering program).</summary>
    public Socket Listener => _listener;

    public long Connections => Interlocked.Read(ref _connections);

    protected CancellationToken Stopping => _stop.Token;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        lock (_held)
        {
            foreach (var socket in _held)
            {
                socket.Dispose();
            }
        }

        _stop.Dispose();
    }

    /// <summary>Called by the derived constructor once its own fields are set.</summary>
    protected void StartAccepting() => _acceptLoop = Task.Run(AcceptLoopAsync);

    /// <summary>Keeps a connection open (not closed by the serving code) until dispose.</summary>
    protected void Hold(Socket connection)
    {
        lock (_held)
        {
            _held.Add(connection);
        }
    }

    protected abstract Task ServeAsync(Socket connection);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _connections);
            _ = Task.Run(() => ServeAsync(connection));
        }
    }
}
