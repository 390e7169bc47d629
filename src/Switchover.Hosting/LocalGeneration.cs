using Microsoft.AspNetCore.Server.Kestrel.Core;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>This process as a generation: its bindings, its open connections, whether it drains.</summary>
internal sealed class LocalGeneration
{
    private readonly List<(PublicEndpoint Public, ListenOptions Listen)> _bindings = [];
    private int _connections;
    private long _lastRequestTicks = Environment.TickCount64;
    private volatile bool _draining;

    /// <summary>Set once the takeover protocol registered this process in the namespace state.</summary>
    public GenerationRecord? Record { get; set; }

    public bool Draining => _draining;

    public int OpenConnections => Volatile.Read(ref _connections);

    /// <summary>Milliseconds since a request last arrived on this generation.</summary>
    public long MillisecondsSinceLastRequest => Environment.TickCount64 - Volatile.Read(ref _lastRequestTicks);

    public void AddBinding(PublicEndpoint endpoint, ListenOptions listen)
    {
        lock (_bindings)
        {
            _bindings.Add((endpoint, listen));
        }
    }

    /// <summary>The public port to private port mappings; valid once Kestrel has bound.</summary>
    public IReadOnlyList<PortMapping> BoundPorts()
    {
        lock (_bindings)
        {
            return _bindings.Select(b => new PortMapping(b.Public.Port,
                b.Listen.IPEndPoint?.Port is > 0 and var port
                    ? port
                    : throw new InvalidOperationException($"Kestrel has not bound a private port for {b.Public}."))).ToList();
        }
    }

    public void StartDraining() => _draining = true;

    public void ConnectionOpened() => Interlocked.Increment(ref _connections);

    public void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    public void RequestReceived() => Volatile.Write(ref _lastRequestTicks, Environment.TickCount64);
}
