using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Netfilter;

/// <summary>
/// The nftables table that goes with a kernel GRE link: GRE (IP protocol 47) addressed to the tunnel's local outer
/// address is accepted only from its remote end; from any other source it is counted and dropped before conntrack
/// sees it. The userspace dataplane needs no table: its raw socket checks the source itself and counts strays.
/// GRE to other local addresses (another tunnel's) is left alone.
/// </summary>
public sealed record GrePeerFilter(string TunnelDevice, IPAddress Local, IPAddress Remote)
{
    /// <summary>The named counter of dropped stray packets.</summary>
    public const string StrayCounter = "stray";

    /// <summary>
    /// GRE in UDP (RFC 8086, FOU on the kernel's side): the UDP destination port the GRE arrives on. Null (the default):
    /// plain GRE, IP protocol 47.
    /// </summary>
    public ushort? UdpPort { get; init; }

    /// <summary>`switchover_gre_DEVICE`: one table per tunnel link, so that two links keep separate filters.</summary>
    public string TableName => "switchover_gre_" + (TunnelDevice.Length > 0 && TunnelDevice.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
        ? TunnelDevice
        : throw new ArgumentException($"Device name '{TunnelDevice}' may contain only letters, digits, '-', '_' and '.'.", nameof(TunnelDevice)));

    /// <summary>The table as one `nft -f -` transaction: created or replaced whole, never merged with a stale one.</summary>
    public string Render()
    {
        if (Local.AddressFamily != Remote.AddressFamily || Local.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
        {
            throw new ArgumentException($"The outer addresses {Local} and {Remote} must be two IPv4 or two IPv6 addresses.", nameof(Local));
        }

        var ip = Local.AddressFamily == AddressFamily.InterNetworkV6 ? "ip6" : "ip";
        var table = "inet " + TableName;
        var sb = new StringBuilder();
        sb.Append("table ").Append(table).Append(" {\n}\nflush table ").Append(table).Append('\n');
        sb.Append("table ").Append(table).Append(" {\n");
        sb.Append("\tcounter ").Append(StrayCounter).Append(" {\n\t}\n");
        // The protocol by number: its name needs /etc/protocols. Priority raw (-300): ahead of conntrack, so a flood of
        // strays creates no conntrack entries.
        sb.Append("\tchain prerouting {\n\t\ttype filter hook prerouting priority -300; policy accept;\n");
        var match = UdpPort is { } port ? "udp dport " + port.ToString(System.Globalization.CultureInfo.InvariantCulture) : "meta l4proto 47";
        sb.Append('\t', 2).Append(ip).Append(" daddr ").Append(Local).Append(' ').Append(match).Append(' ')
            .Append(ip).Append(" saddr != ").Append(Remote).Append(" counter name \"").Append(StrayCounter).Append("\" drop\n");
        sb.Append("\t}\n}\n");
        return sb.ToString();
    }

    /// <summary>Deletes the table; creating it empty first makes the transaction succeed when it is already gone.</summary>
    public string RenderDelete() => SteeringTable.RenderDelete(TableName);
}
