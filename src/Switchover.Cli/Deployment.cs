using System.Diagnostics;
using Switchover.Interop;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>
/// One <c>switchover deploy</c>: launches the new generation (see <see cref="LaunchedGeneration"/>), and watches three things
/// until it knows how the launch ended: the outcome file the generation writes (took over, or failed and why, with its
/// last log lines), the namespace's state (the child's pid becoming Active), and the child's own exit.
/// </summary>
internal sealed class Deployment
{
    private readonly IReadOnlyList<string> _command;
    private readonly NamespaceName? _namespace;
    private readonly TimeSpan _timeout;
    private readonly string _stateRoot;
    private readonly List<string> _warnings = [];
    private readonly Stopwatch _elapsed = new();
    private bool _generationReported;

    public Deployment(IReadOnlyList<string> command, NamespaceName? name, TimeSpan timeout, string stateRoot)
    {
        _command = command;
        _namespace = name;
        _timeout = timeout;
        _stateRoot = stateRoot;
    }

    // internal for testing: how often the files are read, and how long the ends of a deploy wait.
    internal TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>How long a generation that reported its failure may take to exit before deploy stops it.</summary>
    internal TimeSpan ExitGrace { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long a generation the state shows Active may take to write its outcome (it does right after).</summary>
    internal TimeSpan OutcomeGrace { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a generation deploy stopped (SIGTERM) may take to exit before it gets SIGKILL.</summary>
    internal TimeSpan StopGrace { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Runs the deploy. Never throws for what the generation does; <see cref="DeployStartException"/> when deploy
    /// itself cannot run (the state root is not writable), before anything was started.
    /// </summary>
    public async Task<DeployReport> RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            Directory.CreateDirectory(_stateRoot);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeployStartException($"Cannot create the state directory {_stateRoot}: {e.Message}. Nothing was started. " +
                "Run as root (or as the service's user), or pass --state-dir DIR.", e);
        }

        OutcomeFile.RemoveAbandoned(_stateRoot);
        var outcomePath = OutcomeFile.PathFor(_stateRoot, ProcessIdentity.Current);
        OutcomeFile.Remove(outcomePath);
        try
        {
            var report = await LaunchAndWatchAsync(outcomePath, cancellationToken).ConfigureAwait(false);
            if (report.Result != DeployResult.TookOver && !_generationReported && report.Serving is { } serving)
            {
                // The generation told systemd nothing about its failure: deploy ends the reload in its place.
                SystemdNotify.TrySend(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"READY=1\nMAINPID={serving.Pid}\nSTATUS=reload failed: {DeployReport.Label(report.Result)}: {ToolErrors.OneLine(report.Reason ?? string.Empty)}"));
            }

            return report;
        }
        finally
        {
            OutcomeFile.Remove(outcomePath);
        }
    }

    private async Task<DeployReport> LaunchAndWatchAsync(string outcomePath, CancellationToken cancellationToken)
    {
        var environment = new Dictionary<string, string> { [OutcomeFile.EnvironmentVariable] = outcomePath };
        if (_namespace is { } name)
        {
            // The namespace deploy watches is the one the generation joins, unless its own command line says otherwise.
            environment["Switchover__Namespace"] = name.Value;
        }

        _elapsed.Start();
        LaunchedGeneration child;
        try
        {
            child = SystemdNotify.IsEnabled
                ? await LaunchedGeneration.StartDetachedAsync(_command, environment, outcomePath + ".pid", cancellationToken).ConfigureAwait(false)
                : LaunchedGeneration.StartChild(_command, environment);
        }
        catch (LaunchException e)
        {
            return Report(DeployResult.StartFailed, null, null, e.Message);
        }

        using (child)
        {
            return await WatchAsync(child, child.Identity, outcomePath, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<DeployReport> WatchAsync(LaunchedGeneration child, ProcessIdentity? identity, string outcomePath, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_timeout);
        TimeSpan? activeSeenAt = null;
        GenerationOutcome? outcome = null;
        while (true)
        {
            outcome = OutcomeFile.TryRead(outcomePath) ?? outcome;
            if (outcome is { IsFinal: true })
            {
                return await FinishAsync(child, identity, outcome).ConfigureAwait(false);
            }

            if (child.HasExited)
            {
                // It may have written its outcome just before it exited.
                outcome = OutcomeFile.TryRead(outcomePath) ?? outcome;
                if (outcome is { IsFinal: true })
                {
                    return await FinishAsync(child, identity, outcome).ConfigureAwait(false);
                }

                return Report(DeployResult.Crashed, child, outcome,
                    (child.ExitCode is { } code
                        ? $"it {DeployReport.DescribeExit(code)} before it took over"
                        : "it exited before it took over (its exit status went to the service manager that adopted it: see the unit's journal)") +
                    (outcome is null ? " (it never reported to deploy: is it an app with UseSwitchover()?)" : string.Empty),
                    exitCode: child.ExitCode);
            }

            if (NamespaceOf(outcome) is { } name && FindInState(name, child.Id) is { State: GenerationState.Active })
            {
                // Active in the state: it writes its outcome right after. If it cannot, the state is enough.
                activeSeenAt ??= _elapsed.Elapsed;
                if (_elapsed.Elapsed - activeSeenAt > OutcomeGrace)
                {
                    _warnings.Add("the generation took over but did not record its outcome (its log says why); its log lines are not shown.");
                    return Report(DeployResult.TookOver, child, outcome, null);
                }
            }

            try
            {
                await Task.Delay(PollInterval, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return await GiveUpAsync(child, identity, outcomePath, outcome, interrupted: cancellationToken.IsCancellationRequested)
                    .ConfigureAwait(false);
            }
        }
    }

    /// <summary>The generation said how it ended. A failed one exits by itself; one that does not (Mode=Disabled) is stopped.</summary>
    private async Task<DeployReport> FinishAsync(LaunchedGeneration child, ProcessIdentity? identity, GenerationOutcome outcome)
    {
        if (outcome.Kind == OutcomeKind.TookOver)
        {
            return Report(DeployResult.TookOver, child, outcome, null);
        }

        _generationReported = true;

        if (!await ExitsWithinAsync(child, ExitGrace).ConfigureAwait(false))
        {
            _warnings.Add($"the generation did not exit within {ExitGrace.TotalSeconds:0} s of reporting its failure; deploy stopped it (SIGTERM).");
            await StopAsync(child, identity).ConfigureAwait(false);
        }

        var result = outcome.Kind switch
        {
            OutcomeKind.Unhealthy => DeployResult.Unhealthy,
            OutcomeKind.LockTimeout => DeployResult.LockTimeout,
            OutcomeKind.Superseded => DeployResult.Superseded,
            OutcomeKind.Stopped => DeployResult.Crashed,
            _ => DeployResult.StartFailed,
        };
        return Report(result, child, outcome, outcome.Reason ?? "(the generation gave no reason)", child.HasExited ? child.ExitCode : null);
    }

    /// <summary>
    /// The timeout passed (or deploy was interrupted) first. The generation is stopped, so that it cannot take over
    /// after deploy reported failure; under the namespace lock, so that it cannot take over while deploy decides.
    /// </summary>
    private async Task<DeployReport> GiveUpAsync(LaunchedGeneration child, ProcessIdentity? identity, string outcomePath, GenerationOutcome? outcome, bool interrupted)
    {
        var name = NamespaceOf(outcome);
        var store = name is null ? null : new StateStore(_stateRoot, name);
        var signalled = false;
        if (store is { Exists: true })
        {
            try
            {
                using var held = await store.LockAsync(TimeSpan.FromSeconds(interrupted ? 1 : 10), CancellationToken.None).ConfigureAwait(false);
                if (held.Read().Generations.FirstOrDefault(g => g.Pid == child.Id) is { State: not GenerationState.Starting })
                {
                    // It took over just now: that is a success, and stopping it would leave the ports to nobody.
                    return Report(DeployResult.TookOver, child, OutcomeFile.TryRead(outcomePath) ?? outcome, null);
                }

                Signal(identity, Libc.SIGTERM);
                signalled = true;
            }
            catch (StateException e)
            {
                _warnings.Add($"could not take the namespace lock to stop the generation safely ({e.Message}).");
            }
        }

        var late = OutcomeFile.TryRead(outcomePath);
        if (late is { Kind: OutcomeKind.TookOver })
        {
            return Report(DeployResult.TookOver, child, late, null);
        }

        await StopAsync(child, identity, interrupted ? TimeSpan.FromSeconds(1) : StopGrace, signalled).ConfigureAwait(false);
        var reason = interrupted
            ? "deploy was interrupted before the generation took over; deploy stopped it"
            : $"it neither took over nor failed within --timeout {_timeout.TotalSeconds:0.#} s; deploy stopped it";
        return Report(DeployResult.TimedOut, child, late ?? outcome, reason, child.HasExited ? child.ExitCode : null);
    }

    private async Task StopAsync(LaunchedGeneration child, ProcessIdentity? identity, TimeSpan? grace = null, bool signalled = false)
    {
        if (!signalled)
        {
            Signal(identity, Libc.SIGTERM);
        }

        if (!await ExitsWithinAsync(child, grace ?? StopGrace).ConfigureAwait(false))
        {
            _warnings.Add($"the generation (pid {child.Id}) did not exit after SIGTERM; deploy killed it (SIGKILL).");
            Signal(identity, Libc.SIGKILL);
            await ExitsWithinAsync(child, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
    }

    private static void Signal(ProcessIdentity? identity, int signal)
    {
        try
        {
            identity?.Signal(signal);
        }
        catch (InvalidOperationException)
        {
            // Not ours to signal (another user); the exit wait reports it.
        }
    }

    private static async Task<bool> ExitsWithinAsync(LaunchedGeneration child, TimeSpan timeout)
    {
        using var wait = new CancellationTokenSource(timeout);
        try
        {
            await child.WaitForExitAsync(wait.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return child.HasExited;
        }
    }

    private NamespaceName? NamespaceOf(GenerationOutcome? outcome)
    {
        if (outcome?.Namespace is { } reported && NamespaceName.Validate(reported) is null)
        {
            var name = NamespaceName.Parse(reported);
            if (_namespace is { } given && given.Value != name.Value && !_warnings.Any(w => w.Contains("joined namespace", StringComparison.Ordinal)))
            {
                _warnings.Add($"the generation joined namespace '{name}', not '{given}' (its command line sets Switchover:Namespace); " +
                    "deploy followed it there.");
            }

            return name;
        }

        return _namespace;
    }

    private GenerationRecord? FindInState(NamespaceName name, int pid)
    {
        try
        {
            return new StateStore(_stateRoot, name).ReadUnlocked()?.Generations.FirstOrDefault(g => g.Pid == pid);
        }
        catch (Exception e) when (e is StateException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private ServingGeneration? Serving(NamespaceName? name)
    {
        try
        {
            var active = name is null ? null : new StateStore(_stateRoot, name).ReadUnlocked()?.WithoutDead(p => p.IsAlive(), out _).Active;
            return active is null ? null : new ServingGeneration(active.Id, active.Pid);
        }
        catch (Exception e) when (e is StateException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private DeployReport Report(DeployResult result, LaunchedGeneration? child, GenerationOutcome? outcome, string? reason, int? exitCode = null)
    {
        var elapsed = _elapsed.Elapsed.TotalMilliseconds;
        var name = NamespaceOf(outcome);
        var generationId = outcome?.GenerationId ?? (name is null || child is null ? null : FindInState(name, child.Id)?.Id);
        return new DeployReport(
            result,
            DeployReport.ExitCodeOf(result),
            name?.Value,
            generationId,
            child?.Id,
            result == DeployResult.TookOver ? outcome?.LaunchToServingMs ?? elapsed : null,
            elapsed,
            reason,
            exitCode,
            exitCode is { } code ? DeployReport.SignalOf(code) : null,
            result == DeployResult.TookOver ? null : Serving(name),
            result == DeployResult.TookOver ? [] : outcome?.LogLines ?? [],
            [.. _warnings]);
    }
}

/// <summary>deploy itself cannot run; nothing was started. The message says why and what to do.</summary>
internal sealed class DeployStartException(string message, Exception inner) : Exception(message, inner);
