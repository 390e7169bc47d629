using System.Globalization;
using System.Net;
using System.Text;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>A public endpoint sent to a private port of the active generation.</summary>
public sealed record PortSteer(PortMapping Port, long GenerationId, int Pid);

/// <summary>
/// The one nftables table a namespace owns. A chain late in prerouting (after the host firewall's filters) sees only
/// connection openings: it drops SYNs from the network to every live generation's private port (reachable only through
/// the public port, or from this host for the generation's own readiness probe), and steers SYNs for the public
/// endpoints to the active generation: by TPROXY (the packet keeps its destination port, so the host firewall's input
/// hook sees the public port) or by NAT REDIRECT (two nat chains, the previous mechanism). Packets of established
/// flows never match a rule of ours: TPROXY'd flows are found by the kernel's socket lookup, NAT'd ones by conntrack.
/// This is the only place that knows nft syntax for the handoff.
/// </summary>
/// <param name="NatChains">
/// The nat chains exist while any live generation was steered by REDIRECT, even if the active one is not: NAT of
/// established flows is done by the nat hooks, which the kernel unregisters with the last nat chain of the namespace.
/// </param>
public sealed record HandoffTable(NamespaceName Namespace, Steering Steering, IReadOnlyList<PortSteer> Steers, IReadOnlyList<int> GuardedPorts, bool NatChains)
{
    /// <summary>
    /// The connection-mark bits a TPROXY'd flow is stamped with (the rest of the mark is left as it was): the
    /// generation's own tag, so that its drain asks conntrack only about its own half-open flows.
    /// </summary>
    public const uint CtMarkMask = 0x00ff0000;

    public static HandoffTable FromState(NamespaceName name, NamespaceState state)
    {
        var active = state.Active;
        var steers = active is null
            ? []
            : active.Ports.OrderBy(p => p.PublicPort).ThenBy(p => p.PublicAddress, StringComparer.Ordinal)
                .Select(p => new PortSteer(p, active.Id, active.Pid)).ToList();
        // Loops, not LINQ: Distinct and Order over int are JIT-compiled in every generation at its launch.
        var guarded = new List<int>();
        foreach (var generation in state.Generations)
        {
            foreach (var port in generation.Ports)
            {
                if (!guarded.Contains(port.PrivatePort))
                {
                    guarded.Add(port.PrivatePort);
                }
            }
        }

        guarded.Sort();
        var steering = active?.Steering ?? Steering.Tproxy;
        var nat = steering == Steering.Redirect || state.Generations.Any(g => g.Steering == Steering.Redirect);
        return new HandoffTable(name, steering, steers, guarded, nat);
    }

    /// <summary>The first port of the table (public and private of each steer, then the guarded ones) outside 1-65535, if any.</summary>
    internal int? PortOutOfRange()
    {
        foreach (var steer in Steers)
        {
            if (steer.Port.PublicPort is < 1 or > 65535)
            {
                return steer.Port.PublicPort;
            }

            if (steer.Port.PrivatePort is < 1 or > 65535)
            {
                return steer.Port.PrivatePort;
            }
        }

        foreach (var port in GuardedPorts)
        {
            if (port is < 1 or > 65535)
            {
                return port;
            }
        }

        return null;
    }

    /// <summary>The connection mark bits (within <see cref="CtMarkMask"/>) of a generation's TPROXY'd flows: 1 to 255.</summary>
    public static uint CtMarkOf(long generationId) => (uint)((generationId % 255) + 1) << 16;

    /// <summary>
    /// The whole table as one nft script: declare, flush, redefine. Fed to one <c>nft -f -</c>, the kernel applies it
    /// all or nothing, and no other table is touched.
    /// </summary>
    public string Render()
    {
        if (PortOutOfRange() is { } port)
        {
            throw new ArgumentOutOfRangeException(nameof(Steers), port, $"Port {port} is out of range 1-65535; no rule was rendered.");
        }

        var table = $"inet {Namespace.TableName}";
        var sb = new StringBuilder();
        sb.Append("table ").Append(table).Append(" {\n}\n");
        sb.Append("flush table ").Append(table).Append('\n');
        sb.Append("table ").Append(table).Append(" {\n");
        sb.Append("\tchain prerouting {\n");
        // Late in prerouting, after every filter a host firewall puts there (firewalld's reverse-path filter sits at
        // filter + 10): they see the packet exactly as they would without Switchover. Earlier, a socket assigned by
        // TPROXY makes the kernel's fib expression skip its loopback shortcut (nft_fib_can_skip), and firewalld's
        // IPv6 rpfilter then drops SYNs from ::1.
        sb.Append("\t\ttype filter hook prerouting priority filter + 20; policy accept;\n");
        sb.Append("\t\ttcp flags & (fin | syn | rst | ack) != syn return\n");
        if (GuardedPorts.Count > 0)
        {
            var set = "{ " + string.Join(", ", GuardedPorts.Select(p => p.ToString(CultureInfo.InvariantCulture))) + " }";
            if (NatChains)
            {
                // This chain runs after NAT: a SYN our REDIRECT sent to a private port is one of ours.
                sb.Append("\t\tiif != \"lo\" tcp dport ").Append(set).Append(" ct status dnat accept\n");
            }

            sb.Append("\t\tiif != \"lo\" tcp dport ").Append(set).Append(" drop\n");
        }

        if (Steering == Steering.Tproxy)
        {
            foreach (var steer in Steers)
            {
                var (match, family) = Match(steer.Port);
                var mark = CtMarkOf(steer.GenerationId);
                sb.Append(CultureInfo.InvariantCulture,
                    $"\t\t{match}tproxy {family}to :{steer.Port.PrivatePort} ct mark set ct mark & 0x{~CtMarkMask:x8} | 0x{mark:x8} accept {Comment(steer)}\n");
            }
        }

        sb.Append("\t}\n");
        if (NatChains)
        {
            AppendNatChain(sb, "nat_prerouting", "prerouting");
            AppendNatChain(sb, "nat_output", "output");
        }

        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>Deletes the table if it exists (declaring it first makes the delete idempotent), in one transaction.</summary>
    public static string RenderDelete(NamespaceName name) =>
        $"table inet {name.TableName} {{\n}}\ndelete table inet {name.TableName}\n";

    /// <summary>Only the table declaration: used with <c>nft --check</c> to prove nft works and we may change rules.</summary>
    public static string RenderProbe(NamespaceName name) => $"table inet {name.TableName} {{\n}}\n";

    /// <summary>
    /// What selects the endpoint's packets, and the family TPROXY needs once the match names one. Only local
    /// destinations: a steer must never capture outbound or forwarded traffic to this port.
    /// </summary>
    private static (string Match, string Family) Match(PortMapping port)
    {
        var dport = string.Create(CultureInfo.InvariantCulture, $"tcp dport {port.PublicPort} ");
        if (port.PublicAddress is null)
        {
            return (dport + "fib daddr type local ", string.Empty);
        }

        var address = IPAddress.Parse(port.PublicAddress);
        if (address.Equals(IPAddress.Any))
        {
            return ("meta nfproto ipv4 " + dport + "fib daddr type local ", "ip ");
        }

        return address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? ($"ip6 daddr {address} " + dport, "ip6 ")
            : ($"ip daddr {address} " + dport, "ip ");
    }

    private static string Comment(PortSteer steer) =>
        string.Create(CultureInfo.InvariantCulture, $"comment \"gen={steer.GenerationId} pid={steer.Pid}\"");

    private void AppendNatChain(StringBuilder sb, string chain, string hook)
    {
        sb.Append("\tchain ").Append(chain).Append(" {\n");

        // nft 1.0.6 rejects the 'dstnat' keyword in an output chain, so the number is written out.
        sb.Append("\t\ttype nat hook ").Append(hook).Append(" priority -100; policy accept;\n");
        foreach (var steer in Steering == Steering.Redirect ? Steers : [])
        {
            sb.Append(CultureInfo.InvariantCulture, $"\t\t{Match(steer.Port).Match}redirect to :{steer.Port.PrivatePort} {Comment(steer)}\n");
        }

        sb.Append("\t}\n");
    }
}
