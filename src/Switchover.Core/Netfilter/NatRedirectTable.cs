using System.Globalization;
using System.Text;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>A public port sent to a private port of one generation.</summary>
public sealed record NatRedirect(int PublicPort, int PrivatePort, long GenerationId, int Pid);

/// <summary>
/// The one nftables table a namespace owns: redirects of the public ports to the active generation (for traffic
/// from the network and from this host), and a guard that makes every live generation's private ports reachable
/// only through the public port (or from loopback, for the generation's own readiness probe).
/// This is the only place that knows nft syntax for the handoff.
/// </summary>
public sealed record NatRedirectTable(NamespaceName Namespace, IReadOnlyList<NatRedirect> Redirects, IReadOnlyList<int> GuardedPorts)
{
    public static NatRedirectTable FromState(NamespaceName name, NamespaceState state)
    {
        var active = state.Active;
        var redirects = active is null
            ? []
            : active.Ports.OrderBy(p => p.PublicPort).Select(p => new NatRedirect(p.PublicPort, p.PrivatePort, active.Id, active.Pid)).ToList();
        var guarded = state.Generations.SelectMany(g => g.Ports).Select(p => p.PrivatePort).Distinct().Order().ToList();
        return new NatRedirectTable(name, redirects, guarded);
    }

    /// <summary>
    /// The whole table as one nft script: declare, flush, redefine. Fed to one <c>nft -f -</c>, the kernel applies it
    /// all or nothing, and no other table is touched.
    /// </summary>
    public string Render()
    {
        foreach (var port in Redirects.SelectMany(r => new[] { r.PublicPort, r.PrivatePort }).Concat(GuardedPorts))
        {
            if (port is < 1 or > 65535)
            {
                throw new ArgumentOutOfRangeException(nameof(Redirects), port, $"Port {port} is out of range 1-65535; no rule was rendered.");
            }
        }

        var table = $"inet {Namespace.TableName}";
        var sb = new StringBuilder();
        sb.Append("table ").Append(table).Append(" {\n}\n");
        sb.Append("flush table ").Append(table).Append('\n');
        sb.Append("table ").Append(table).Append(" {\n");
        AppendNatChain(sb, "prerouting", "prerouting");
        AppendNatChain(sb, "output", "output");
        sb.Append("\tchain input {\n");
        sb.Append("\t\ttype filter hook input priority 0; policy accept;\n");
        if (GuardedPorts.Count > 0)
        {
            var set = "{ " + string.Join(", ", GuardedPorts.Select(p => p.ToString(CultureInfo.InvariantCulture))) + " }";
            sb.Append("\t\ttcp dport ").Append(set).Append(" ct status dnat accept\n");
            sb.Append("\t\tiif \"lo\" tcp dport ").Append(set).Append(" accept\n");
            sb.Append("\t\ttcp dport ").Append(set).Append(" drop\n");
        }

        sb.Append("\t}\n");
        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>Deletes the table if it exists (declaring it first makes the delete idempotent), in one transaction.</summary>
    public static string RenderDelete(NamespaceName name) =>
        $"table inet {name.TableName} {{\n}}\ndelete table inet {name.TableName}\n";

    /// <summary>Only the table declaration: used with <c>nft --check</c> to prove nft works and we may change rules.</summary>
    public static string RenderProbe(NamespaceName name) => $"table inet {name.TableName} {{\n}}\n";

    private void AppendNatChain(StringBuilder sb, string chain, string hook)
    {
        sb.Append("\tchain ").Append(chain).Append(" {\n");

        // nft 1.0.6 rejects the 'dstnat' keyword in an output chain, so the number is written out.
        sb.Append("\t\ttype nat hook ").Append(hook).Append(" priority -100; policy accept;\n");
        foreach (var redirect in Redirects)
        {
            // Only local destinations: a redirect must never capture outbound or forwarded traffic to this port.
            sb.Append(CultureInfo.InvariantCulture,
                $"\t\tfib daddr type local tcp dport {redirect.PublicPort} redirect to :{redirect.PrivatePort} comment \"gen={redirect.GenerationId} pid={redirect.Pid}\"\n");
        }

        sb.Append("\t}\n");
    }
}
