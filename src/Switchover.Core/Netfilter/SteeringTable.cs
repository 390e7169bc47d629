using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Netfilter;

/// <summary>A transport protocol of a moved tuple.</summary>
public enum TupleProtocol
{
    Tcp,
    Udp,
}

/// <summary>One IP:port service moved between hosts, e.g. tcp/192.0.2.1:25 or udp/[2001:db8::1]:53.</summary>
public sealed record SteeredTuple(TupleProtocol Protocol, IPAddress Address, int Port)
{
    public bool IsIPv6 => Address.AddressFamily == AddressFamily.InterNetworkV6;

    public string ProtocolName => Protocol == TupleProtocol.Tcp ? "tcp" : "udp";

    /// <summary>The set element, e.g. "192.0.2.1 . tcp . 25".</summary>
    public string Element => string.Create(CultureInfo.InvariantCulture, $"{Address} . {ProtocolName} . {Port}");

    /// <summary>Parses "tcp/192.0.2.1:25" or "udp/[2001:db8::1]:53".</summary>
    public static SteeredTuple Parse(string text)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var protocol = slash < 0 ? string.Empty : text[..slash].ToLowerInvariant();
        var rest = slash < 0 ? text : text[(slash + 1)..];
        var colon = rest.LastIndexOf(':');
        if (protocol is not ("tcp" or "udp") || colon < 0)
        {
            throw new FormatException($"'{text}' is not a tuple. Write it as tcp/IP:PORT or udp/IP:PORT, e.g. tcp/192.0.2.1:25 or udp/[2001:db8::1]:53.");
        }

        var host = rest[..colon].Trim('[', ']');
        if (!IPAddress.TryParse(host, out var address) || address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
            || rest[..colon].Contains('%', StringComparison.Ordinal))
        {
            throw new FormatException($"'{text}': '{host}' is not an IPv4 or IPv6 address.");
        }

        if (!int.TryParse(rest[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            throw new FormatException($"'{text}': the port must be 1-65535.");
        }

        return new SteeredTuple(protocol == "tcp" ? TupleProtocol.Tcp : TupleProtocol.Udp, address, port);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{ProtocolName}/{(IsIPv6 ? $"[{Address}]" : Address.ToString())}:{Port}");
}

/// <summary>
/// The nftables table of one migration on one host.
/// Old host: flows to moved tuples (new flows only) and every flow the new host starts through the tunnel get a
/// conntrack mark; every packet of a marked flow gets the fwmark that policy routing sends into the tunnel.
/// New host: counts packets for the moved addresses that arrive directly (the provider rerouted them: time to finalize).
/// Both: clamp the TCP MSS of SYNs through the tunnel to its MTU.
/// </summary>
public sealed record SteeringTable(
    string Name,
    bool OldSide,
    string TunnelDevice,
    uint Mark,
    IReadOnlyList<SteeredTuple> Tuples,
    IReadOnlyList<IPAddress> MovedAddresses)
{
    public string TableName => "switchover_mig_" + Name;

    /// <summary>
    /// The bits of the connection mark a migration sets and matches: all but <see cref="HandoffTable.CtMarkMask"/>,
    /// where Switchover hosting keeps the generation of each TPROXY'd flow. A moved tuple served by a Switchover app
    /// keeps both marks: the migration's (its replies go back through the tunnel) and the generation's (its drain
    /// counts the flow). A whole-mark set or an exact match would lose one or the other, whichever chain ran second.
    /// </summary>
    public const uint CtMarkMask = ~HandoffTable.CtMarkMask;

    /// <summary>Whether <paramref name="mark"/> fits the migration's bits of the connection mark (<see cref="CtMarkMask"/>).</summary>
    public static bool FitsConnectionMark(uint mark) => mark != 0 && (mark & ~CtMarkMask) == 0;

    /// <summary>Whether a connection mark, as conntrack shows it, carries the migration's <paramref name="mark"/>.</summary>
    public static bool CarriesMark(uint connectionMark, uint mark) => (connectionMark & CtMarkMask) == mark;

    public string Render()
    {
        var table = "inet " + TableName;
        var mark = "0x" + Mark.ToString("x", CultureInfo.InvariantCulture);
        var tun = Quote(TunnelDevice);
        var setMark = string.Create(CultureInfo.InvariantCulture, $"ct mark set ct mark & 0x{HandoffTable.CtMarkMask:x8} | {mark}");
        var marked = string.Create(CultureInfo.InvariantCulture, $"ct mark & 0x{CtMarkMask:x8} == {mark}");
        var sb = new StringBuilder();
        sb.Append("table ").Append(table).Append(" {\n}\nflush table ").Append(table).Append('\n');
        sb.Append("table ").Append(table).Append(" {\n");
        if (OldSide)
        {
            AppendSet(sb, "tuples4", "ipv4_addr . inet_proto . inet_service", Tuples.Where(t => !t.IsIPv6).Select(t => t.Element));
            AppendSet(sb, "tuples6", "ipv6_addr . inet_proto . inet_service", Tuples.Where(t => t.IsIPv6).Select(t => t.Element));
            sb.Append("\tchain prerouting {\n\t\ttype filter hook prerouting priority -150; policy accept;\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname {tun} {setMark} return\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tip daddr . meta l4proto . th dport @tuples4 ct state new {setMark}\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tip6 daddr . meta l4proto . th dport @tuples6 ct state new {setMark}\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\t{marked} meta mark set {mark}\n\t}}\n");
            sb.Append("\tchain mss {\n\t\ttype filter hook forward priority mangle; policy accept;\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\toifname {tun} tcp flags syn tcp option maxseg size set rt mtu\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname {tun} tcp flags syn tcp option maxseg size set rt mtu\n\t}}\n");
        }
        else
        {
            AppendSet(sb, "moved4", "ipv4_addr", MovedAddresses.Where(a => a.AddressFamily == AddressFamily.InterNetwork).Select(a => a.ToString()));
            AppendSet(sb, "moved6", "ipv6_addr", MovedAddresses.Where(a => a.AddressFamily == AddressFamily.InterNetworkV6).Select(a => a.ToString()));
            sb.Append("\tcounter direct {\n\t}\n\tcounter tunnelled {\n\t}\n");
            sb.Append("\tchain prerouting {\n\t\ttype filter hook prerouting priority -150; policy accept;\n");

            // Flows that came through the tunnel answer through it, whatever local address (or NAT redirect) took them.
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname {tun} {setMark}\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname {tun} ip daddr @moved4 counter name \"tunnelled\"\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname {tun} ip6 daddr @moved6 counter name \"tunnelled\"\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname != {{ {tun}, \"lo\" }} ip daddr @moved4 counter name \"direct\"\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\tiifname != {{ {tun}, \"lo\" }} ip6 daddr @moved6 counter name \"direct\"\n\t}}\n");
            sb.Append("\tchain reply {\n\t\ttype route hook output priority mangle; policy accept;\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\t{marked} meta mark set {mark}\n\t}}\n");
            sb.Append("\tchain mss {\n\t\ttype filter hook output priority mangle; policy accept;\n");
            sb.Append(CultureInfo.InvariantCulture, $"\t\toifname {tun} tcp flags syn tcp option maxseg size set rt mtu\n\t}}\n");
        }

        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>Moves a tuple: one set element added, atomically; the chains never change.</summary>
    public string RenderMove(SteeredTuple tuple) =>
        $"add element inet {TableName} {(tuple.IsIPv6 ? "tuples6" : "tuples4")} {{ {tuple.Element} }}\n";

    /// <summary>Returns a tuple to the old host: new flows stay there again; flows already moved finish on the new host.</summary>
    public string RenderReturn(SteeredTuple tuple) =>
        $"delete element inet {TableName} {(tuple.IsIPv6 ? "tuples6" : "tuples4")} {{ {tuple.Element} }}\n";

    public static string RenderDelete(string tableName) => $"table inet {tableName} {{\n}}\ndelete table inet {tableName}\n";

    private static void AppendSet(StringBuilder sb, string name, string type, IEnumerable<string> elements)
    {
        sb.Append("\tset ").Append(name).Append(" {\n\t\ttype ").Append(type).Append('\n');
        var list = elements.ToList();
        if (list.Count > 0)
        {
            sb.Append("\t\telements = { ").AppendJoin(", ", list).Append(" }\n");
        }

        sb.Append("\t}\n");
    }

    private static string Quote(string device) =>
        device.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
            ? "\"" + device + "\""
            : throw new ArgumentException($"Device name '{device}' may contain only letters, digits, '-', '_' and '.'.", nameof(device));
}
