using System.Collections.Concurrent;
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
    private readonly ConcurrentDictionary<ConnectionActivity, byte> _open = new();
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

    /// <summary>A connection was accepted: it is counted, and its requests are followed, until <see cref="ConnectionClosed"/>.</summary>
    public ConnectionActivity ConnectionOpened()
    {
        var connection = new ConnectionActivity();
        _open.TryAdd(connection, 0);
        Interlocked.Increment(ref _connections);
        return connection;
    }

    public void ConnectionClosed(ConnectionActivity connection)
    {
        if (_open.TryRemove(connection, out _))
        {
            Interlocked.Decrement(ref _connections);
        }
    }

    /// <summary>
    /// The open connections by what they are doing now: requests in flight, idle (HTTP/1.x, or no request yet) within
    /// <paramref name="keepAliveTimeout"/> or beyond it, HTTP/2. Reads each connection once; not a snapshot of all at one instant.
    /// </summary>
    public ConnectionSurvey SurveyConnections(TimeSpan keepAliveTimeout)
    {
        var limit = keepAliveTimeout == Timeout.InfiniteTimeSpan ? long.MaxValue : (long)keepAliveTimeout.TotalMilliseconds;
        int busy = 0, idle = 0, expired = 0, http2 = 0;
        long longestIdle = 0;
        foreach (var connection in _open.Keys)
        {
            if (connection.IsHttp2)
            {
                http2++;
            }
            else if (connection.IdleMilliseconds is not { } idleFor)
            {
                busy++;
            }
            else if (idleFor > limit)
            {
                expired++;
            }
            else
            {
                idle++;
                longestIdle = Math.Max(longestIdle, idleFor);
            }
        }

        return new ConnectionSurvey(busy, idle, expired, http2, TimeSpan.FromMilliseconds(longestIdle));
    }

    public void RequestReceived() => Volatile.Write(ref _lastRequestTicks, Environment.TickCount64);
}

/// <summary>
/// One accepted connection, as the drain sees it: whether a request is in progress on it, since when it is idle, and
/// whether it speaks HTTP/2. Requests are reported by the drain middleware; a connection that has not had a request yet
/// is idle since it was accepted (Kestrel's keep-alive timeout runs from then too).
/// </summary>
internal sealed class ConnectionActivity
{
    private long _idleSince = Environment.TickCount64;
    private int _inFlight;
    private volatile bool _http2;

    public bool IsHttp2 => _http2;

    /// <summary>How long no request has been in progress on this connection; null while one is.</summary>
    public long? IdleMilliseconds
    {
        get
        {
            // RequestEnded writes the time before it decrements, so no request in flight means the time is current.
            if (Volatile.Read(ref _inFlight) > 0)
            {
                return null;
            }

            return Math.Max(0, Environment.TickCount64 - Volatile.Read(ref _idleSince));
        }
    }

    public void RequestStarted(bool http2)
    {
        if (http2)
        {
            _http2 = true;
        }

        Interlocked.Increment(ref _inFlight);
    }

    public void RequestEnded()
    {
        Volatile.Write(ref _idleSince, Environment.TickCount64);
        Interlocked.Decrement(ref _inFlight);
    }
}

/// <summary>Open connections of a generation by what they are doing, from <see cref="LocalGeneration.SurveyConnections"/>.</summary>
/// <param name="Busy">HTTP/1.x connections with a request in progress.</param>
/// <param name="Idle">HTTP/1.x connections (or ones without a request yet) idle for no longer than the keep-alive timeout.</param>
/// <param name="IdlePastKeepAlive">Idle for longer than the keep-alive timeout: Kestrel closes these itself within its next heartbeat.</param>
/// <param name="Http2">HTTP/2 connections: moved off with GOAWAY, not waited for.</param>
/// <param name="LongestIdle">The longest idle time among <paramref name="Idle"/>.</param>
internal readonly record struct ConnectionSurvey(int Busy, int Idle, int IdlePastKeepAlive, int Http2, TimeSpan LongestIdle)
{
    public int Open => Busy + Idle + IdlePastKeepAlive + Http2;

    /// <summary>HTTP/1.x connections a client may still send a request on: the ones that wait for their client.</summary>
    public int Waiting => Busy + Idle;
}
