using System.Globalization;

namespace Switchover.Cli.Doctor.Rules;

/// <summary>What a condition says about the probe packet.</summary>
internal enum Truth
{
    False,
    True,

    /// <summary>Understood, but it depends on the client: its address, interface, or a rate.</summary>
    Depends,

    /// <summary>Not understood: doctor cannot tell (an iptables match nft only names, an expression it does not model).</summary>
    Unknown,
}

internal enum ProbeFamily
{
    V4,
    V6,
}

/// <summary>Where the connection comes from.</summary>
internal enum ProbeOrigin
{
    /// <summary>A client on the network: arrives on an interface other than lo, addressed to a local unicast address.</summary>
    Network,

    /// <summary>A client on this host: leaves through output (out lo) and comes back through prerouting and input (in lo).</summary>
    Loopback,
}

/// <summary>
/// The packet doctor follows through the chains: a TCP packet to <paramref name="Port"/> of a local address.
/// <paramref name="Established"/> false is the SYN of a new connection (conntrack state new), true a later packet
/// of it. <paramref name="Dnat"/>: the flow was redirected (conntrack status dnat), as with the Redirect steering.
/// </summary>
internal sealed record Probe(ProbeFamily Family, int Port, ProbeOrigin Origin, bool Established = false, bool Dnat = false)
{
    public string FamilyName => Family == ProbeFamily.V4 ? "IPv4" : "IPv6";
}

/// <summary>The probe at one hook: which interfaces exist depends on the hook.</summary>
internal sealed record EvaluationContext(Probe Probe, string Hook)
{
    /// <summary>The input interface: lo for a local client, some other interface for a network client, none on output.</summary>
    public string? InputInterface => Hook is "output" or "postrouting" ? null : Probe.Origin == ProbeOrigin.Loopback ? "lo" : NetworkInterface;

    public string? OutputInterface => Hook is "output" or "postrouting" or "forward" ? (Probe.Origin == ProbeOrigin.Loopback ? "lo" : null) : null;

    /// <summary>A network client's interface: its name is not known, only that it is not lo.</summary>
    public const string NetworkInterface = "\0network";
}

internal abstract record Condition
{
    public abstract Truth Evaluate(EvaluationContext context);

    protected static Truth Negate(Truth truth, bool negated) => !negated ? truth
        : truth switch { Truth.True => Truth.False, Truth.False => Truth.True, _ => truth };

    protected static Truth Of(bool value) => value ? Truth.True : Truth.False;
}

/// <summary>A fixed answer: something that depends on the client (source address), or that doctor does not understand.</summary>
internal sealed record FixedCondition(Truth Truth, string What) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => Truth;

    public static FixedCondition NotUnderstood(string what) => new(Truth.Unknown, what);

    public static FixedCondition DependsOn(string what) => new(Truth.Depends, what);

    /// <summary>A match on another protocol's header (udp dport 53, icmp type ...): never a TCP packet.</summary>
    public static FixedCondition OtherProtocol(string protocol) => new(Truth.False, protocol);
}

/// <summary>Only packets of one family (meta nfproto, or an ip / ip6 header match in an inet table).</summary>
internal sealed record FamilyCondition(ProbeFamily Family, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => Negate(Of(context.Probe.Family == Family), Negated);
}

/// <summary>A condition that exists only for one family: for the other the match cannot hold (nft's implicit dependency).</summary>
internal sealed record FamilyGated(ProbeFamily Family, Condition Inner) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => context.Probe.Family == Family ? Inner.Evaluate(context) : Truth.False;
}

/// <summary>meta l4proto, ip protocol, ip6 nexthdr, iptables -p.</summary>
internal sealed record ProtocolCondition(IReadOnlySet<string> Protocols, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) =>
        Negate(Of(Protocols.Contains("tcp") || Protocols.Contains("6") || Protocols.Contains("all") || Protocols.Contains("0")), Negated);
}

internal enum PortField
{
    Destination,
    Source,
}

/// <summary>tcp dport / th dport (a set, a range, a named set), iptables --dport and multiport.</summary>
internal sealed record PortCondition(PortField Field, PortSet Ports, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => Field == PortField.Source
        ? Truth.Depends // the client's port: any
        : Negate(Of(Ports.Contains(context.Probe.Port)), Negated);
}

/// <summary>Interface names (iif, iifname, -i), with nft's and iptables' trailing '*' (or '+') wildcards.</summary>
internal sealed record InterfaceCondition(bool Input, IReadOnlyList<string> Names, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context)
    {
        var actual = Input ? context.InputInterface : context.OutputInterface;
        if (actual is null)
        {
            // No such interface at this hook (iifname on output): the match is on the empty name.
            return Negate(Of(Names.Any(n => n.Length == 0)), Negated);
        }

        if (actual == EvaluationContext.NetworkInterface)
        {
            // Any interface but lo: a match on lo is false, a match on a named interface depends on where the client is.
            var onlyLo = Names.All(IsLoopback);
            return onlyLo ? Negate(Truth.False, Negated) : Truth.Depends;
        }

        return Negate(Of(Names.Any(n => Matches(n, actual))), Negated);
    }

    private static bool IsLoopback(string name) => name == "lo";

    private static bool Matches(string pattern, string name) =>
        pattern.EndsWith('*') || pattern.EndsWith('+')
            ? name.StartsWith(pattern[..^1], StringComparison.Ordinal)
            : pattern == name;
}

/// <summary>fib daddr type, iptables -m addrtype --dst-type: our destination is a local address.</summary>
internal sealed record DestinationTypeCondition(IReadOnlySet<string> Types, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => Negate(Of(Types.Contains("local")), Negated);
}

/// <summary>meta pkttype, -m pkttype: our packet is addressed to this host (unicast).</summary>
internal sealed record PacketTypeCondition(IReadOnlySet<string> Types, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) => Negate(Of(Types.Contains("host") || Types.Contains("unicast")), Negated);
}

/// <summary>ct state, -m conntrack --ctstate, -m state --state.</summary>
internal sealed record ConntrackStateCondition(IReadOnlySet<string> States, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context) =>
        Negate(Of(States.Contains(context.Probe.Established ? "established" : "new")), Negated);
}

/// <summary>ct status, -m conntrack --ctstatus: dnat is set on a redirected flow.</summary>
internal sealed record ConntrackStatusCondition(IReadOnlySet<string> Statuses, bool Negated = false) : Condition
{
    public override Truth Evaluate(EvaluationContext context)
    {
        var probe = context.Probe;
        var holds = (probe.Dnat && (Statuses.Contains("dnat") || Statuses.Contains("dst-nat") || Statuses.Contains("dnat-done")))
            || (probe.Established && (Statuses.Contains("confirmed") || Statuses.Contains("seen-reply") || Statuses.Contains("assured")));
        return Negate(Of(holds), Negated);
    }
}

/// <summary>A set of TCP ports: single ports and inclusive ranges.</summary>
internal sealed class PortSet
{
    private readonly List<(int Low, int High)> _ranges;

    public PortSet(IEnumerable<(int Low, int High)> ranges) => _ranges = [.. ranges];

    public static PortSet Single(int port) => new([(port, port)]);

    public bool Contains(int port) => _ranges.Any(r => port >= r.Low && port <= r.High);

    /// <summary>The ports when the set is small and explicit (for reading a steering rule's public port).</summary>
    public IReadOnlyList<int> SinglePorts => [.. _ranges.Where(r => r.Low == r.High).Select(r => r.Low)];

    public override string ToString() => string.Join(",", _ranges.Select(r =>
        r.Low == r.High ? r.Low.ToString(CultureInfo.InvariantCulture) : string.Create(CultureInfo.InvariantCulture, $"{r.Low}-{r.High}")));
}
