namespace Switchover.Cli.Doctor.Rules;

internal enum OutcomeKind
{
    Accept,
    Drop,

    /// <summary>Fell off the end of a regular chain, or a return verdict: evaluation goes on in the caller.</summary>
    Return,

    /// <summary>A verdict doctor cannot predict (queue to userspace, an unknown iptables target).</summary>
    Unknown,
}

/// <summary>A rule on the way to an outcome that did not simply match or not: the outcome holds only if it did (or did not).</summary>
internal sealed record Uncertainty(Rule Rule, Truth Truth);

/// <summary>
/// One way a chain can end for the probe. <see cref="Rule"/> is the rule that decided (null: the chain's end, the
/// policy of a base chain). <see cref="Certainty"/> is <see cref="Truth.True"/> when every rule on the way was
/// understood and did or did not match for certain.
/// </summary>
internal sealed record Outcome(OutcomeKind Kind, Rule? Rule, Chain Chain, Truth Certainty, IReadOnlyList<Uncertainty> Uncertain)
{
    public string Display => Rule?.Display ?? $"{Chain.Display} (policy {(Kind == OutcomeKind.Drop ? "drop" : "accept")})";
}

/// <summary>A rule with an effect (redirect, dnat, tproxy, queue, notrack) that the probe can reach.</summary>
internal sealed record EffectHit(Rule Rule, Effect Effect, Truth Certainty, IReadOnlyList<Uncertainty> Uncertain);

/// <summary>Everything one base chain can do to the probe.</summary>
internal sealed record BaseChainResult(Chain Chain, IReadOnlyList<Outcome> Outcomes, IReadOnlyList<EffectHit> Effects)
{
    public bool AllAccept => Outcomes.All(o => o.Kind == OutcomeKind.Accept);

    public bool AllDrop => Outcomes.Count > 0 && Outcomes.All(o => o.Kind == OutcomeKind.Drop);
}

internal enum Verdict
{
    Accepted,
    Dropped,

    /// <summary>Accepted for some clients, dropped for others (by source address, interface, rate).</summary>
    Depends,

    /// <summary>Doctor cannot tell: a rule it does not understand is on the way.</summary>
    NotUnderstood,
}

/// <summary>What all base chains of one hook do to the probe, in priority order.</summary>
internal sealed record HookResult(Probe Probe, string Hook, Verdict Verdict, IReadOnlyList<BaseChainResult> Chains)
{
    /// <summary>The chain whose every way ends in a drop, when <see cref="Verdict"/> is Dropped.</summary>
    public BaseChainResult? DroppedBy => Chains.FirstOrDefault(c => c.AllDrop);

    public IEnumerable<EffectHit> Effects => Chains.SelectMany(c => c.Effects);

    /// <summary>The explicit accept rules that let the probe through chains that would otherwise drop it.</summary>
    public IReadOnlyList<Outcome> DecidingAccepts => [.. Chains.Where(c => RuleEvaluator.Filters(c.Chain)).SelectMany(c => c.Outcomes)
        .Where(o => o.Kind == OutcomeKind.Accept && o.Rule is not null)
        .DistinctBy(o => o.Rule)];

    public IReadOnlyList<Outcome> PossibleDrops => [.. Chains.SelectMany(c => c.Outcomes).Where(o => o.Kind == OutcomeKind.Drop).DistinctBy(o => (o.Rule, o.Chain))];

    /// <summary>The rules doctor did not understand on the probe's way.</summary>
    public IReadOnlyList<Rule> NotUnderstoodRules => [.. Chains.SelectMany(c => c.Outcomes)
        .SelectMany(o => o.Uncertain.Where(u => u.Truth == Truth.Unknown).Select(u => u.Rule)
            .Concat(o.Kind == OutcomeKind.Unknown && o.Rule is not null ? [o.Rule] : []))
        .Distinct()];

    public IReadOnlyList<Rule> ClientDependentRules => [.. Chains.SelectMany(c => c.Outcomes)
        .SelectMany(o => o.Uncertain.Where(u => u.Truth == Truth.Depends).Select(u => u.Rule))
        .Distinct()];
}

/// <summary>
/// Follows the probe through the base chains of one hook. A rule whose match is certain either runs or not; a rule
/// that depends on the client or is not understood forks the evaluation: both ways are followed, and the outcomes
/// remember why they are uncertain. Results are memoized per (chain, rule index), so forks do not multiply.
/// </summary>
internal sealed class RuleEvaluator
{
    private const int MaxDepth = 64;
    private const int MaxUncertain = 6;
    private readonly EvaluationContext _context;
    private readonly Dictionary<(Chain Chain, int Index), Segment> _memo = [];

    private RuleEvaluator(EvaluationContext context) => _context = context;

    public static HookResult Evaluate(Ruleset ruleset, string hook, Probe probe, Func<Table, bool>? include = null)
    {
        var evaluator = new RuleEvaluator(new EvaluationContext(probe, hook));
        var chains = ruleset.BaseChains(hook)
            .Where(c => c.Table.Sees(probe.Family) && (include?.Invoke(c.Table) ?? true))

            // NAT chains see only the first packet of a flow, where its conntrack entry is created: a local client's
            // flow is created on output, so when its packets come back through prerouting (on lo) NAT is decided.
            .Where(c => c.Hook!.Type != "nat" || (!probe.Established && !(hook == "prerouting" && probe.Origin == ProbeOrigin.Loopback)))
            .OrderBy(c => c.Hook!.Priority)
            .Select(evaluator.EvaluateBase)
            .ToList();

        Verdict verdict;
        if (chains.Any(c => c.AllDrop))
        {
            verdict = Verdict.Dropped;
        }
        else if (chains.All(c => c.AllAccept))
        {
            verdict = Verdict.Accepted;
        }
        else
        {
            var mixed = chains.Where(c => !c.AllAccept).SelectMany(c => c.Outcomes);
            verdict = mixed.Any(o => o.Kind == OutcomeKind.Unknown || o.Certainty == Truth.Unknown) ? Verdict.NotUnderstood : Verdict.Depends;
        }

        return new HookResult(probe, hook, verdict, chains);
    }

    /// <summary>Whether a chain can drop anything at all: a drop policy, or a drop or reject somewhere below it.</summary>
    public static bool Filters(Chain chain) => Filters(chain, 0);

    private static bool Filters(Chain chain, int depth) =>
        depth < MaxDepth && (chain.Hook?.PolicyDrop == true || chain.Rules.Any(r => r.Action.Verdict == VerdictKind.Drop
            || (r.Action.Verdict is VerdictKind.Jump or VerdictKind.Goto && chain.Table.Chains.TryGetValue(r.Action.Target!, out var target) && Filters(target, depth + 1))));

    private BaseChainResult EvaluateBase(Chain chain)
    {
        var segment = From(chain, 0, 0);
        var policy = chain.Hook!.PolicyDrop ? OutcomeKind.Drop : OutcomeKind.Accept;
        var outcomes = segment.Outcomes
            .Select(o => o.Kind == OutcomeKind.Return ? o with { Kind = policy, Rule = null, Chain = chain } : o)
            .ToList();
        return new BaseChainResult(chain, Dedupe(outcomes), segment.Effects);
    }

    private Segment From(Chain chain, int index, int depth)
    {
        if (_memo.TryGetValue((chain, index), out var known))
        {
            return known;
        }

        var result = Compute(chain, index, depth);
        _memo[(chain, index)] = result;
        return result;
    }

    private Segment Compute(Chain chain, int index, int depth)
    {
        if (depth > MaxDepth)
        {
            return new Segment([new Outcome(OutcomeKind.Unknown, null, chain, Truth.Unknown, [])], []);
        }

        for (var i = index; i < chain.Rules.Count; i++)
        {
            var rule = chain.Rules[i];
            var truth = rule.Match(_context);
            if (truth == Truth.False)
            {
                continue;
            }

            var taken = Apply(chain, i, rule, depth);
            if (truth == Truth.True)
            {
                return taken;
            }

            var skipped = From(chain, i + 1, depth);
            return Segment.Union(taken.Weaken(rule, truth), skipped.Weaken(rule, truth));
        }

        return new Segment([new Outcome(OutcomeKind.Return, null, chain, Truth.True, [])], []);
    }

    private Segment Apply(Chain chain, int index, Rule rule, int depth)
    {
        IReadOnlyList<EffectHit> effects = rule.Action.Effect is { } effect ? [new EffectHit(rule, effect, Truth.True, [])] : [];
        Segment Decided(OutcomeKind kind) => new([new Outcome(kind, rule, chain, Truth.True, [])], effects);

        switch (rule.Action.Verdict)
        {
            case VerdictKind.Continue:
                var rest = From(chain, index + 1, depth);
                return rest with { Effects = [.. effects, .. rest.Effects] };
            case VerdictKind.Accept:
                return Decided(OutcomeKind.Accept);
            case VerdictKind.Drop:
                return Decided(OutcomeKind.Drop);
            case VerdictKind.Return:
                return Decided(OutcomeKind.Return);
            case VerdictKind.Jump or VerdictKind.Goto:
                if (!chain.Table.Chains.TryGetValue(rule.Action.Target!, out var target))
                {
                    return Decided(OutcomeKind.Unknown);
                }

                var sub = From(target, 0, depth + 1);
                var outcomes = new List<Outcome>();
                var subEffects = new List<EffectHit>(effects);
                subEffects.AddRange(sub.Effects);
                foreach (var outcome in sub.Outcomes)
                {
                    if (outcome.Kind != OutcomeKind.Return)
                    {
                        outcomes.Add(outcome);
                    }
                    else if (rule.Action.Verdict == VerdictKind.Goto)
                    {
                        // The end of a chain entered by goto returns from the chain that did the goto.
                        outcomes.Add(outcome with { Chain = chain, Rule = null });
                    }
                    else
                    {
                        var after = From(chain, index + 1, depth).Weaken(outcome.Uncertain, outcome.Certainty);
                        outcomes.AddRange(after.Outcomes);
                        subEffects.AddRange(after.Effects);
                    }
                }

                return new Segment(Dedupe(outcomes), subEffects);
            default:
                return Decided(OutcomeKind.Unknown);
        }
    }

    private static List<Outcome> Dedupe(List<Outcome> outcomes) =>
        [.. outcomes.GroupBy(o => (o.Kind, o.Rule, o.Chain, o.Certainty))
            .Select(g => g.First() with { Uncertain = [.. g.SelectMany(o => o.Uncertain).Distinct().Take(MaxUncertain)] })];

    internal static Truth Weakest(Truth a, Truth b) => Rank(a) >= Rank(b) ? a : b;

    private static int Rank(Truth t) => t switch { Truth.Unknown => 2, Truth.Depends => 1, _ => 0 };

    /// <summary>The ways a run of rules (from one index to its chain's end, or to a verdict) can end, and the effects on the way.</summary>
    private sealed record Segment(IReadOnlyList<Outcome> Outcomes, IReadOnlyList<EffectHit> Effects)
    {
        public Segment Weaken(Rule rule, Truth truth) => Weaken([new Uncertainty(rule, truth)], truth);

        public Segment Weaken(IReadOnlyList<Uncertainty> because, Truth truth)
        {
            if (truth == Truth.True && because.Count == 0)
            {
                return this;
            }

            return new Segment(
                [.. Outcomes.Select(o => o with { Certainty = Weakest(o.Certainty, truth), Uncertain = [.. because.Concat(o.Uncertain).Distinct().Take(MaxUncertain)] })],
                [.. Effects.Select(e => e with { Certainty = Weakest(e.Certainty, truth), Uncertain = [.. because.Concat(e.Uncertain).Distinct().Take(MaxUncertain)] })]);
        }

        public static Segment Union(Segment a, Segment b) =>
            new(Dedupe([.. a.Outcomes, .. b.Outcomes]), [.. a.Effects, .. b.Effects]);
    }
}
