using System.Globalization;
using System.Text;

namespace Switchover.Lab;

/// <summary>What one round did and found.</summary>
/// <param name="Requests">Requests that ended during the round, over both load runs.</param>
/// <param name="Outcome">What became of the round's generations, e.g. "v5 exited 137; v4 active".</param>
/// <param name="ViolationsBeforeRepair">Violations once the namespace settled, before the next operation repaired it: expected after a kill without an agent; not counted.</param>
/// <param name="Violations">Violations left after the repair and after the next deploy: each one fails the soak.</param>
/// <param name="Problems">A step never reached, a generation that did not settle, a next deploy that did not take over: each one fails the soak.</param>
/// <param name="Window">When the round's fault may fail requests, and why (null: it was never injected).</param>
public sealed record SoakRoundResult(
    SoakRoundPlan Plan,
    DateTime StartedUtc,
    DateTime EndedUtc,
    long Requests,
    string Outcome,
    int ViolationsBeforeRepair,
    IReadOnlyList<string> Violations,
    IReadOnlyList<string> Problems,
    FaultWindow? Window)
{
    /// <summary>Failed requests attributed to this round's fault.</summary>
    public int Attributed { get; init; }

    /// <summary>Failed requests during this round that no fault explains.</summary>
    public int Unattributed { get; init; }
}

/// <summary>The soak's outcome: the rounds, every failed request with its attribution, and the replay command.</summary>
public sealed record SoakResult(
    int Seed,
    string ReplayCommand,
    IReadOnlyList<SoakRoundResult> Rounds,
    IReadOnlyList<LoadResult> Loads,
    IReadOnlyList<AttributedFailure> Failures,
    TimeSpan Duration)
{
    public long Requests => Loads.Sum(l => l.TotalRequests);

    public int Attributed => Failures.Count(f => f.Attributed);

    /// <summary>Failures no fault explains, and those the driver counted without keeping their time (so nothing can explain them).</summary>
    public long Unattributed => Failures.Count(f => !f.Attributed) + Loads.Sum(l => l.FailuresNotRecorded);

    public int Violations => Rounds.Sum(r => r.Violations.Count);

    public IEnumerable<string> Problems => Rounds.SelectMany(r => r.Problems.Select(p => $"round {r.Plan.Round}: {p}"));

    /// <summary>Kept-alive connections a killed generation closed under the driver, found before reuse (not failures; reported).</summary>
    public long StaleConnectionsDiscarded => Loads.Sum(l => l.StaleConnectionsDiscarded);

    /// <summary>No unattributed failure, no violation after a repair or a next deploy, and every round ran as planned.</summary>
    public bool Passed => Unattributed == 0 && Violations == 0 && !Problems.Any() && Rounds.Count > 0;

    public string Headline =>
        Inv($"soak seed {Seed}: {Rounds.Count} rounds in {Duration.TotalMinutes:0.0} min, {Requests:N0} requests, {Attributed + Unattributed:N0} failed ") +
        Inv($"({Attributed:N0} attributed, **{Unattributed:N0} unattributed**), **{Violations} invariant violations**, {Problems.Count()} problems: ") +
        (Passed ? "PASS" : "FAIL");

    /// <summary>The table of rounds in Markdown, with the headline and the command that replays the plan.</summary>
    public string ToMarkdown()
    {
        var md = new StringBuilder();
        md.AppendLine(Headline).AppendLine()
            .AppendLine(Inv($"Replay the plan (the faults, steps and delays; not the machine's timing): `{ReplayCommand}`")).AppendLine()
            .AppendLine("| round | fault | step | delay | requests | failed: attributed / unattributed | violations | before the repair | outcome |")
            .AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var round in Rounds)
        {
            md.AppendLine(Inv($"| {round.Plan.Round} | {SoakPlan.Describe(round.Plan.Fault)} | {SoakPlan.Describe(round.Plan.Step)} | {round.Plan.Delay.TotalMilliseconds:0} ms | ") +
                          Inv($"{round.Requests:N0} | {round.Attributed:N0} / {round.Unattributed:N0} | {round.Violations.Count} | {round.ViolationsBeforeRepair} | {round.Outcome} |"));
        }

        md.AppendLine().AppendLine(Inv($"Kept-alive connections closed under the driver by a killed generation (found before reuse, not counted as failures): {StaleConnectionsDiscarded:N0}."));
        foreach (var problem in Problems)
        {
            md.AppendLine().Append("- problem: ").AppendLine(problem);
        }

        foreach (var round in Rounds.Where(r => r.Violations.Count > 0))
        {
            md.AppendLine().AppendLine(Inv($"Round {round.Plan.Round} ({round.Plan}) violations:")).AppendLine("```");
            foreach (var violation in round.Violations)
            {
                md.AppendLine(violation);
            }

            md.AppendLine("```");
        }

        var unattributed = Failures.Where(f => !f.Attributed).Take(20).ToList();
        if (unattributed.Count > 0)
        {
            md.AppendLine().AppendLine("First unattributed failures:").AppendLine("```");
            foreach (var failure in unattributed)
            {
                md.AppendLine(failure.Failure.ToString());
            }

            md.AppendLine("```");
        }

        return md.ToString();
    }

    public override string ToString() => ToMarkdown();

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
