namespace Switchover.Migration.Gre;

/// <summary>
/// A snapshot of a tunnel's counters. Tx is towards the network (inner packets read from the tunnel interface,
/// encapsulated and sent), Rx from it (GRE received, decapsulated and delivered). Bytes are inner packet bytes, as
/// `ip -s link` counts them on a tunnel interface. The kernel dataplane reports packets, bytes, errors and drops only.
/// </summary>
public sealed record TunnelCounters
{
    public long TxPackets { get; init; }

    public long TxBytes { get; init; }

    /// <summary>Sends that failed (ENOBUFS, EPERM from a firewall, …), including <see cref="TxTooBig"/>.</summary>
    public long TxErrors { get; init; }

    /// <summary>Sends refused with EMSGSIZE: the outer packet exceeds the path MTU. Lower the tunnel MTU.</summary>
    public long TxTooBig { get; init; }

    /// <summary>Packets read from the interface that were neither IPv4 nor IPv6, and were not sent.</summary>
    public long TxDropped { get; init; }

    /// <summary>
    /// GRE in UDP: reports from the remote host that a datagram found no socket on port 4754 there (ICMP port
    /// unreachable), e.g. while its end of the tunnel is not up yet. The socket keeps one report at a time, so this
    /// counts reports, not datagrams. Not part of <see cref="TxErrors"/>.
    /// </summary>
    public long TxRefused { get; init; }

    public long RxPackets { get; init; }

    public long RxBytes { get; init; }

    /// <summary>Decapsulated packets the interface would not take (EIO when it is down, …), and receive errors.</summary>
    public long RxErrors { get; init; }

    /// <summary>GRE packets from a source other than the remote outer address: dropped.</summary>
    public long RxStray { get; init; }

    /// <summary>GRE packets from the remote with a wrong key, no key when one is configured, or a key when none is: dropped.</summary>
    public long RxWrongKey { get; init; }

    /// <summary>GRE packets from the remote that are truncated, of another version, with routing, a bad checksum, or not IP inside: dropped.</summary>
    public long RxMalformed { get; init; }

    /// <summary>Every packet received from the network and dropped.</summary>
    public long RxDropped => RxStray + RxWrongKey + RxMalformed;
}
