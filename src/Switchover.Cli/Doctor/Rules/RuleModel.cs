namespace Switchover.Cli.Doctor.Rules;

// What doctor knows of a ruleset: tables, chains and rules reduced to the conditions and actions that matter for one
// question, "what happens to a new TCP connection to port P on this host". Built from `nft -j list ruleset` (and, for
// iptables rules nft cannot show, from iptables-save), evaluated by RuleEvaluator.

/// <summary>Where a table's rules were read from.</summary>
internal enum RuleSource
{
    /// <summary><c>nft -j list ruleset</c> (native nftables, and iptables-nft's tables).</summary>
    Nftables,

    /// <summary><c>iptables-legacy-save</c>: x_tables rules that nft does not see.</summary>
    IptablesLegacy,
}

internal sealed class Table(string family, string name, RuleSource source)
{
    public string Family { get; } = family;

    public string Name { get; } = name;

    public RuleSource Source { get; } = source;

    /// <summary>Chains by name, in the order the ruleset lists them.</summary>
    public Dictionary<string, Chain> Chains { get; } = new(StringComparer.Ordinal);

    /// <summary>Whether a rule holds an iptables match or target nft can only name (an <c>xt</c> expression).</summary>
    public bool HasXtExpressions { get; set; }

    /// <summary>"inet host_fw", as nft names it (legacy tables say so).</summary>
    public string Display => Source == RuleSource.IptablesLegacy ? $"{Family} {Name} (iptables-legacy)" : $"{Family} {Name}";

    /// <summary>Whether packets of a family pass through this table's chains (inet sees both; ip and ip6 one each).</summary>
    public bool Sees(ProbeFamily family) => Family switch
    {
        "inet" => true,
        "ip" => family == ProbeFamily.V4,
        "ip6" => family == ProbeFamily.V6,
        _ => false,
    };

    public override string ToString() => Display;
}

/// <summary>A base chain's registration: the hook it runs at, with what type, priority and policy.</summary>
internal sealed record BaseHook(string Type, string Hook, int Priority, bool PolicyDrop);

internal sealed class Chain(Table table, string name, BaseHook? hook)
{
    public Table Table { get; } = table;

    public string Name { get; } = name;

    public BaseHook? Hook { get; } = hook;

    public List<Rule> Rules { get; } = [];

    public string Display => $"{Table.Display} {Name}";

    public override string ToString() => Display;
}

/// <summary>One rule: all its conditions must hold for its action to run.</summary>
/// <param name="Handle">The nft rule handle (null for iptables-legacy rules).</param>
/// <param name="Text">How to show the rule to a user: nft syntax, or the iptables-save arguments.</param>
internal sealed record Rule(Chain Chain, long? Handle, string Text, IReadOnlyList<Condition> Conditions, RuleAction Action)
{
    /// <summary>The nft rule holds iptables expressions nft can only name; iptables-save can tell what they are.</summary>
    public bool HasXt { get; init; }

    public string Display => Handle is { } h ? $"{Chain.Display} rule \"{Text}\" (handle {h})" : $"{Chain.Display} rule \"{Text}\"";

    public Truth Match(EvaluationContext context)
    {
        var result = Truth.True;
        foreach (var condition in Conditions)
        {
            result = Combine(result, condition.Evaluate(context));
            if (result == Truth.False)
            {
                return Truth.False;
            }
        }

        return result;
    }

    /// <summary>AND of two conditions: false wins, then not understood, then depends-on-the-client.</summary>
    internal static Truth Combine(Truth a, Truth b) =>
        a == Truth.False || b == Truth.False ? Truth.False
        : a == Truth.Unknown || b == Truth.Unknown ? Truth.Unknown
        : a == Truth.Depends || b == Truth.Depends ? Truth.Depends
        : Truth.True;

    public override string ToString() => Display;
}

internal enum VerdictKind
{
    /// <summary>No verdict: the next rule runs.</summary>
    Continue,
    Accept,

    /// <summary>drop or reject: for a client it is the same, the connection does not open.</summary>
    Drop,
    Return,
    Jump,
    Goto,

    /// <summary>A verdict doctor cannot predict (a queue to userspace, an iptables target it does not know).</summary>
    Unknown,
}

/// <summary>What the rule does to the packet besides its verdict, when that takes our traffic away.</summary>
internal enum EffectKind
{
    Redirect,
    Dnat,
    Tproxy,

    /// <summary>Userspace decides (nfqueue).</summary>
    Queue,

    /// <summary>The flow is not tracked: no NAT, no conntrack entry for the drain to see.</summary>
    Notrack,
}

/// <param name="TargetPort">The port it sends to ("redirect to :40635"), when it is one port.</param>
/// <param name="PortMap">Public to target ports, when it maps them ("tproxy to : tcp dport map { 8080 : 40635 }").</param>
internal sealed record Effect(EffectKind Kind, int? TargetPort, string Text, IReadOnlyList<(int From, int To)>? PortMap = null);

internal sealed record RuleAction(VerdictKind Verdict, string? Target = null, Effect? Effect = null)
{
    public static RuleAction Continue { get; } = new(VerdictKind.Continue);
}
