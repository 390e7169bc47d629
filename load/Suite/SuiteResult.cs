using Switchover.Lab;
using Switchover.Load.Report;
using Switchover.Load.Scenarios;

namespace Switchover.Load.Suite;

/// <summary>Everything one run of the suite measured, for the report and the exit code.</summary>
internal sealed record SuiteResult(
    SuiteSettings Settings,
    string CommandLine,
    DateTime StartedUtc,
    TimeSpan Duration,
    MachineInfo Machine,
    string GitCommit,
    string LoadAverageAtEnd,
    IReadOnlyList<RollingRun> Rolling,
    IReadOnlyList<OverheadRound> Overhead,
    TimingResult? Timing,
    IReadOnlyList<string> Errors)
{
    /// <summary>The drain scenario's runs, one per idle-connection policy (empty when it did not run).</summary>
    public IReadOnlyList<DrainPolicyRun> Drain { get; init; } = [];
    /// <summary>The overhead scenario's CPU profiles (empty when perf could not be used: see <see cref="ChainProfileProblem"/>).</summary>
    public IReadOnlyList<ChainProfile> ChainProfiles { get; init; } = [];

    public string? ChainProfileProblem { get; init; }

    /// <summary>The kernel scenario's measurements, when it ran.</summary>
    public KernelResult? Kernel { get; init; }

    /// <summary>The randomized fault soak, when it ran.</summary>
    public SoakResult? Soak { get; init; }

    public IEnumerable<RollingRun> SwitchoverRuns => Rolling.Where(r => r.Contender == ContenderKind.Switchover);

    /// <summary>Every failure Switchover showed anywhere in the suite, one line each.</summary>
    public IReadOnlyList<string> SwitchoverFailures()
    {
        var failures = new List<string>();
        foreach (var run in SwitchoverRuns.Where(r => !r.Clean))
        {
            failures.Add($"rolling {run.Label}: {run.Failures} failed requests" + (run.Problems.Count > 0 ? "; " + string.Join("; ", run.Problems) : string.Empty));
        }

        foreach (var round in Overhead.Where(r => r.Variant == OverheadVariant.Switchover && r.Failures > 0))
        {
            failures.Add($"overhead {round.Client} / {Modes.Name(round.Mode)} round {round.Round}: {round.Failures} failed requests");
        }

        if (Timing is { } timing)
        {
            var probe = timing.Probe;
            if (probe.FailureCount + probe.StaleConnectionsDiscarded > 0)
            {
                failures.Add($"timing probe: {probe.FailureCount + probe.StaleConnectionsDiscarded} failed requests");
            }

            failures.AddRange(timing.Problems.Select(p => "timing: " + p));
            foreach (var handoff in timing.Handoffs.Where(h => h.Fates is { } f && (f.Reset > 0 || f.UnexpectedData > 0)))
            {
                failures.Add($"timing: {handoff.Fates!.Reset} idle connections reset, {handoff.Fates.UnexpectedData} got unexpected data when v{handoff.Version - 1} drained");
            }
        }

        // Under the default policy a returning client loses nothing; CloseAfterQuiet is the comparison and may.
        foreach (var run in Drain.Where(r => r.Policy == "WaitForClient"))
        {
            if (run.Returning.FailureCount > 0 || run.Fates.Reset > 0 || run.Problems.Count > 0)
            {
                failures.Add($"drain {run.Policy}: {run.Returning.FailureCount} failed requests, {run.Fates.Reset} abandoned connections reset" +
                             (run.Problems.Count > 0 ? "; " + string.Join("; ", run.Problems) : string.Empty));
            }
        }

        failures.AddRange(Kernel?.Problems.Select(p => "kernel: " + p) ?? []);
        if (Soak is { Passed: false } soak)
        {
            failures.Add($"soak seed {soak.Seed}: {soak.Unattributed} unattributed failed requests, {soak.Violations} invariant violations" +
                         string.Concat(soak.Problems.Take(5).Select(p => "; " + p)));
        }

        return failures;
    }

    /// <summary>Naive runs that saw no failure: the harness would not have noticed drops there.</summary>
    public IEnumerable<RollingRun> BlindBaselines => Rolling.Where(r => r.Contender == ContenderKind.Naive && r.Handoffs.Count > 0 && r.Failures == 0);

    public int ExitCode =>
        SwitchoverFailures().Count > 0 ? ExitCodes.SwitchoverFailed
        : Errors.Count > 0 ? ExitCodes.CouldNotRun
        : BlindBaselines.Any() ? ExitCodes.HarnessBlind
        : ExitCodes.Passed;
}
