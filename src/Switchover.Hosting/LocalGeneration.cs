using System.Net;
using Microsoft.AspNetCore.Connections;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>This process as a generation: its bindings, its open connections, whether it drains.</summary>
internal sealed class LocalGeneration
{
    private readonly List<PortMapping> _bindings = [];
    private readonly List<string> _refused = [];
    private readonly List<EndPoint> _leftAlone = [];
    private int _connections;
    private long _lastRequestTicks = Environment.TickCount64;
    private volatile bool _draining;

    /// <summary>Set once the takeover protocol registered this process in the namespace state.</summary>
    public GenerationRecord? Record { get; set; }

    public bool Draining => _draining;

    public int OpenConnections => Volatile.Read(ref _connections);

    /// <summary>Milliseconds since a request last arrived on this generation.</summary>
    public long MillisecondsSinceLastRequest => Environment.TickCount64 - Volatile.Read(ref _lastRequestTicks);

    public void AddBinding(PortMapping mapping)
    {
        lock (_bindings)
        {
            _bindings.Add(mapping);
        }
    }

    /// <summary>Records why an endpoint cannot be handed over, and returns the listener that stands in for it.</summary>
    public IConnectionListener Refuse(EndPoint endpoint, string reason)
    {
        BindFailed(reason);
        return new RefusedListener(endpoint);
    }

    /// <summary>Records that Kestrel could not bind (the server was stopped again): the generation must not register.</summary>
    public void BindFailed(string reason)
    {
        lock (_bindings)
        {
            _refused.Add(reason);
        }
    }

    /// <summary>Records an endpoint that is not a public port (a Unix socket): bound as configured, not handed over.</summary>
    public void LeaveAlone(EndPoint endpoint)
    {
        lock (_bindings)
        {
            _leftAlone.Add(endpoint);
        }
    }

    /// <summary>Why endpoints were refused or could not be bound; the generation must not register when there is any.</summary>
    public IReadOnlyList<string> RefusedEndpoints
    {
        get
        {
            lock (_bindings)
            {
                return [.. _refused];
            }
        }
    }

    public IReadOnlyList<EndPoint> EndpointsLeftAlone
    {
        get
        {
            lock (_bindings)
            {
                return [.. _leftAlone];
            }
        }
    }

    /// <summary>The public endpoint to private port mappings, one per endpoint Kestrel bound; valid once Kestrel has started.</summary>
    public IReadOnlyList<PortMapping> BoundPorts()
    {
        lock (_bindings)
        {
            return [.. _bindings];
        }
    }

    public void StartDraining() => _draining = true;

    /// <summary>A rollback made this generation active again: its responses no longer ask clients to reconnect.</summary>
    public void StopDraining() => _draining = false;

    public void ConnectionOpened() => Interlocked.Increment(ref _connections);

    public void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    public void RequestReceived() => Volatile.Write(ref _lastRequestTicks, Environment.TickCount64);
}
