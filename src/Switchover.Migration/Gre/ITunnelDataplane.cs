namespace Switchover.Migration.Gre;

/// <summary>Which implementation carries a tunnel's packets.</summary>
public enum GreDataplaneKind
{
    /// <summary>The kernel's ip_gre / ip6_gre: `ip link add … type gre|ip6gre`. Needs no process after it is created.</summary>
    Kernel,

    /// <summary>A TUN device and a raw IPPROTO_GRE socket, served by packet loops in this process.</summary>
    Userspace,
}

/// <summary>
/// A GRE tunnel interface: created and brought up by <see cref="StartAsync"/>, removed by DisposeAsync. Both
/// implementations are wire-compatible: either end may be kernel or userspace.
/// </summary>
public interface ITunnelDataplane : IAsyncDisposable
{
    TunnelOptions Options { get; }

    GreDataplaneKind Kind { get; }

    /// <summary>
    /// Completes when the tunnel has stopped: after DisposeAsync, or on its own when it failed (then faulted, with the
    /// reason). Pending until <see cref="StartAsync"/> has succeeded.
    /// </summary>
    Task Completion { get; }

    /// <summary>Creates the interface with its MTU and brings it up. Throws <see cref="TunnelException"/> when it cannot.</summary>
    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>The counters now.</summary>
    Task<TunnelCounters> GetCountersAsync(CancellationToken cancellationToken);
}
