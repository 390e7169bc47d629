using System.Globalization;
using Switchover.State;

namespace Switchover.Lab;

/// <summary>Bounds and shape of one soak.</summary>
public sealed class SoakOptions
{
    /// <summary>Seeds the plan (<see cref="SoakPlan.Rounds"/>).</summary>
    public int Seed { get; init; }

    /// <summary>Rounds at most. Default: 30.</summary>
    public int Rounds { get; init; } = 30;

    /// <summary>No round starts after this much time. Default: 30 min.</summary>
    public TimeSpan MaxDuration { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>The command that replays this plan, for the report.</summary>
    public string ReplayCommand { get; init; } = string.Empty;

    /// <summary>Workers per path in each of the two load runs (keep-alive and new connection). Default: 2.</summary>
    public int Concurrency { get; init; } = 2;

    /// <summary>The generations' Switchover:RollbackWindow. Default: 5 s.</summary>
    public TimeSpan RollbackWindow { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Extra arguments for every generation (e.g. to disable the rollback window when checking that the soak can fail).</summary>
    public IReadOnlyList<string> Arguments { get; init; } = [];

    /// <summary>Progress, one line per round. Default: none.</summary>
    public Action<string> Log { get; init; } = _ => { };
}

/// <summary>
/// The randomized fault soak: in one lab, under continuous load from the lab's driver on every path (a keep-alive
/// and a new-connection-per-request run), rounds of handoffs, each with the fault, step and delay its seeded plan
/// says. After each round's fault: the generations settle, the invariant is checked once (before the repair, for
/// the record), <c>switchover status</c> repairs what nothing watched, the invariant must hold within 5 s, the next
/// deploy must take over, and the invariant must hold again; when the new generation was killed while it served, the
/// previous one must have taken the port back (its rollback window). Every failed request is attributed to the round whose
/// fault window holds it, and only when that fault killed a serving process (<see cref="FailureAttribution"/>).
/// Leaves nothing behind: the generations are stopped, the state's tmpfs unmounted, the shims deleted; the caller
/// owns the lab.
/// </summary>
public sealed class Soak
{
    private const int Port = 8080;
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan DeployTimeout = TimeSpan.FromSeconds(60);

    // A generation whose nft hangs is killed at the client's 15 s timeout, twice (the change, then its restore).
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan InvariantWithin = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan StopFor = TimeSpan.FromSeconds(5);

    private readonly TwoHostLab _lab;
    private readonly SoakOptions _options;
    private readonly SoakScratch _scratch;
    private readonly SwitchoverService _service;
    private readonly Dictionary<int, string> _texts = [];
    private LoadRun[] _loads = [];
    private LabProcess _current = null!;
    private int _version;

    private Soak(TwoHostLab lab, SoakOptions options, SoakScratch scratch, SwitchoverService service)
    {
        _lab = lab;
        _options = options;
        _scratch = scratch;
        _service = service;
    }

    public static async Task<SoakResult> RunAsync(TwoHostLab lab, SoakOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(lab);
        ArgumentNullException.ThrowIfNull(options);
        await using var scratch = await SoakScratch.CreateAsync(cancellationToken).ConfigureAwait(false);
        // Disposed before the scratch: the generations stop before their state's tmpfs goes.
        var service = new SwitchoverService(lab.Server, Artifacts.TestServer, Port)
        {
            RollbackWindow = options.RollbackWindow,
            StateRoot = scratch.StateRoot,
            Arguments = options.Arguments,
        };
        await using (service.ConfigureAwait(false))
        {
            return await new Soak(lab, options, scratch, service).RunAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<SoakResult> RunAsync(CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        _options.Log(Inv($"soak seed {_options.Seed}: up to {_options.Rounds} rounds or {_options.MaxDuration.TotalMinutes:0.#} min; replay: {_options.ReplayCommand}"));
        _current = (await DeployAsync(cancellationToken).ConfigureAwait(false)).Process;
        _loads =
        [
            HttpLoad.Start(_lab.AllPaths(Port, "keepalive-"), LoadOptions(ConnectionMode.KeepAlive), cancellationToken),
            HttpLoad.Start(_lab.AllPaths(Port, "newconn-"), LoadOptions(ConnectionMode.NewConnectionPerRequest), cancellationToken),
        ];
        var rounds = new List<SoakRoundResult>();
        var loads = new List<LoadResult>();
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
            foreach (var plan in SoakPlan.Rounds(_options.Seed).Take(_options.Rounds))
            {
                if (DateTime.UtcNow - started >= _options.MaxDuration)
                {
                    break;
                }

                var round = await RunRoundAsync(plan, cancellationToken).ConfigureAwait(false);
                rounds.Add(round);
                _options.Log(Inv($"  {plan}: {round.Requests:N0} requests, {round.Outcome}, violations {round.Violations.Count} (before the repair {round.ViolationsBeforeRepair})") +
                             (round.Problems.Count > 0 ? "; PROBLEM: " + string.Join("; ", round.Problems) : string.Empty));
                if (round.Problems.Any(p => p.StartsWith("no deploy", StringComparison.Ordinal)))
                {
                    break;
                }
            }

            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
            foreach (var load in _loads)
            {
                loads.Add(await load.StopAsync(cancellationToken).ConfigureAwait(false));
            }
        }
        finally
        {
            foreach (var process in _service.Processes.Where(p => !p.HasExited))
            {
                // A round that was cut short may leave one stopped: SIGTERM alone would not reach it.
                process.TrySendSignal(Signals.Continue);
            }

            foreach (var load in _loads)
            {
                await load.DisposeAsync().ConfigureAwait(false);
            }
        }

        var windows = rounds.Where(r => r.Window is not null).Select(r => r.Window!).ToList();
        var failures = FailureAttribution.Attribute(loads.SelectMany(l => l.Failures).OrderBy(f => f.TimestampUtc), windows);
        rounds = [.. rounds.Select(r => r with
        {
            Attributed = failures.Count(f => f.Window is { } w && ReferenceEquals(w, r.Window)),
            Unattributed = failures.Count(f => !f.Attributed && f.Failure.TimestampUtc >= r.StartedUtc && f.Failure.TimestampUtc < r.EndedUtc),
        })];
        return new SoakResult(_options.Seed, _options.ReplayCommand, rounds, loads, failures, DateTime.UtcNow - started);
    }

    private async Task<SoakRoundResult> RunRoundAsync(SoakRoundPlan plan, CancellationToken cancellationToken)
    {
        var startedUtc = DateTime.UtcNow;
        var requestsBefore = Requests();
        var problems = new List<string>();
        var old = _current;
        var text = NextText();
        string[] extra = plan.Fault is SoakFault.NftRefuses or SoakFault.NftHangs
            ? [$"--Switchover:NftPath={_scratch.WriteNftShim(text, plan.Fault == SoakFault.NftHangs, plan.Step == SoakStep.Launch ? 0 : 1)}"]
            : [];
        LabProcess? next = null;
        LabProcess? second = null;
        DateTime? injectedUtc = null;
        string? killedServing = null;
        try
        {
            if (plan.Step == SoakStep.Launch && plan.Fault != SoakFault.TwoDeploys)
            {
                await Task.Delay(plan.Delay, cancellationToken).ConfigureAwait(false);
                injectedUtc = DateTime.UtcNow;
                await ApplyHostFaultAsync(plan.Fault, problems, cancellationToken).ConfigureAwait(false);
            }

            next = Launch(text, extra);
            if (plan.Fault == SoakFault.TwoDeploys)
            {
                // The delay is the time between the two launches.
                await Task.Delay(plan.Delay, cancellationToken).ConfigureAwait(false);
                injectedUtc = DateTime.UtcNow;
                second = Launch(text + "b", []);
            }
            else if (plan.Step != SoakStep.Launch)
            {
                var (process, mark) = plan.Step switch
                {
                    SoakStep.Registered => (next, "registered (pid"),
                    SoakStep.Ready => (next, "is ready after"),
                    SoakStep.TookOver => (next, "launch to serving"),
                    _ => (old, "drains: listeners stay open"),
                };
                try
                {
                    await process.WaitForOutputAsync(mark, StepTimeout, cancellationToken).ConfigureAwait(false);
                    await Task.Delay(plan.Delay, cancellationToken).ConfigureAwait(false);
                    injectedUtc = DateTime.UtcNow;
                    killedServing = await InjectAsync(plan, old, next, problems, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is TimeoutException or InvalidOperationException)
                {
                    problems.Add($"step '{SoakPlan.Describe(plan.Step)}' never came, so nothing was injected: {e.Message.Split('\n')[0]}");
                }
            }

            foreach (var generation in new[] { next, second }.OfType<LabProcess>())
            {
                if (!await _service.SettleAsync(generation, Settle, cancellationToken).ConfigureAwait(false))
                {
                    problems.Add(Inv($"{_texts[generation.Pid]} (pid {generation.Pid}) neither took over nor exited within {Settle.TotalSeconds:0} s"));
                }
            }
        }
        finally
        {
            if (plan.Fault == SoakFault.StopNew && next is { HasExited: false })
            {
                next.TrySendSignal(Signals.Continue);
            }

            await _scratch.LiftAsync(cancellationToken).ConfigureAwait(false);
        }

        var beforeRepair = await _service.CheckInvariantAsync(cancellationToken).ConfigureAwait(false);
        if (killedServing is null && plan.Fault == SoakFault.KillNew && injectedUtc is not null && FailureAttribution.TookOver(old, next!, beforeRepair))
        {
            // Killed "after ready" (plus the delay), but its takeover had come first: it served.
            killedServing = FailureAttribution.KilledServing(killedNew: true, killedOld: false, newServes: true) + " (it took over within the step's delay)";
        }

        await _service.CliAsync(cancellationToken, "status", "--namespace", _service.Name, "--state-dir", _scratch.StateRoot).ConfigureAwait(false);
        var afterRepair = await _service.WaitForInvariantAsync(InvariantWithin, cancellationToken).ConfigureAwait(false);
        var recoveredUtc = DateTime.UtcNow;
        var active = afterRepair.State?.Active is { } a && a.Process.IsAlive() ? a : null;
        var outcome = string.Join("; ", new[] { next, second }.OfType<LabProcess>().Select(Fate)) +
                      $"; active after the repair: {(active is null ? "none" : _texts.GetValueOrDefault(active.Pid, "pid " + active.Pid.ToString(CultureInfo.InvariantCulture)))}";

        // The rollback window's promise: the new generation died while it served, the previous one takes the port back.
        if (plan.Fault == SoakFault.KillNew && killedServing is not null && active?.Pid != old.Pid)
        {
            problems.Add(Inv($"{_texts[old.Pid]} did not take the port back after {text} was killed (rollback window {_options.RollbackWindow.TotalSeconds:0.#} s)"));
        }

        // The next deploy must work, whatever the fault left.
        var followUp = await TryDeployAsync(problems, cancellationToken).ConfigureAwait(false);
        if (active is null)
        {
            // Nothing served after the repair: the recovery is the next deploy's takeover.
            recoveredUtc = DateTime.UtcNow;
        }

        var afterDeploy = await _service.WaitForInvariantAsync(InvariantWithin, cancellationToken).ConfigureAwait(false);
        if (followUp is not null)
        {
            _current = followUp.Process;
        }

        return new SoakRoundResult(
            plan, startedUtc, DateTime.UtcNow, Requests() - requestsBefore, outcome, beforeRepair.Violations.Count,
            [.. afterRepair.Violations.Select(v => "after the repair: " + v), .. afterDeploy.Violations.Select(v => "after the next deploy: " + v)],
            problems,
            injectedUtc is { } at ? new FaultWindow(plan.ToString(), at, recoveredUtc, killedServing) : null);
    }

    /// <summary>A host fault that the new generation meets from its launch on, or from the step on.</summary>
    private async Task ApplyHostFaultAsync(SoakFault fault, List<string> problems, CancellationToken cancellationToken)
    {
        if (fault == SoakFault.StateReadOnly)
        {
            await _scratch.MakeReadOnlyAsync(cancellationToken).ConfigureAwait(false);
        }
        else if (fault == SoakFault.StateFull && await _scratch.FillAsync(cancellationToken).ConfigureAwait(false) is var free and >= 4096)
        {
            problems.Add(Inv($"the state directory's tmpfs did not fill up ({free} bytes free)"));
        }
    }

    /// <summary>Injects the round's fault after its step's mark; returns why requests may fail, or null when none may.</summary>
    private async Task<string?> InjectAsync(SoakRoundPlan plan, LabProcess old, LabProcess next, List<string> problems, CancellationToken cancellationToken)
    {
        switch (plan.Fault)
        {
            case SoakFault.KillNew or SoakFault.KillOld or SoakFault.KillBoth:
                return FailureAttribution.Kill(old, next, plan.Fault is SoakFault.KillNew or SoakFault.KillBoth, plan.Fault is SoakFault.KillOld or SoakFault.KillBoth,
                    newServes: plan.Step is SoakStep.TookOver or SoakStep.Draining);
            case SoakFault.StopNew:
                next.TrySendSignal(Signals.Stop);
                await Task.Delay(StopFor, cancellationToken).ConfigureAwait(false);
                next.TrySendSignal(Signals.Continue);
                return null;
            default:
                // The nft shims count changes themselves; the state faults start here.
                await ApplyHostFaultAsync(plan.Fault, problems, cancellationToken).ConfigureAwait(false);
                return null;
        }
    }

    /// <summary>The next deploy; one more try if it did not take over (recorded as a problem either way).</summary>
    private async Task<LaunchedGeneration?> TryDeployAsync(List<string> problems, CancellationToken cancellationToken)
    {
        for (var attempt = 1; attempt <= 2; attempt++)
        {
            try
            {
                return await DeployAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (InvalidOperationException e)
            {
                problems.Add((attempt == 1 ? "the next deploy did not take over: " : "no deploy took over after the fault, the soak stops: ") + e.Message.Split('\n')[0]);
            }
        }

        return null;
    }

    private async Task<LaunchedGeneration> DeployAsync(CancellationToken cancellationToken)
    {
        var text = NextText();
        var generation = await _service.DeployAsync(text, DeployTimeout, cancellationToken).ConfigureAwait(false);
        _texts[generation.Process.Pid] = text;
        return generation;
    }

    private LabProcess Launch(string text, IEnumerable<string> extra)
    {
        var process = _service.Launch(text, extra);
        _texts[process.Pid] = text;
        return process;
    }

    private string NextText() => Inv($"v{++_version}");

    private string Fate(LabProcess generation) =>
        _texts[generation.Pid] + (generation.HasExited ? Inv($" exited {generation.Exited.Result}") : " took over");

    private long Requests() => _loads.Sum(l => l.OkRequests + l.FailedRequests);

    private LoadOptions LoadOptions(ConnectionMode mode) => new()
    {
        Mode = mode,
        Concurrency = _options.Concurrency,
        MaxDuration = _options.MaxDuration + TimeSpan.FromMinutes(10),
        MaxRequests = long.MaxValue,
        RequestTimeout = TimeSpan.FromSeconds(10),
        BodyValidator = static body => body.Length > 0,
        MaxRecordedFailures = 1_000_000,
    };

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
