using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Switchover.Interop;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Drives this process through the generation lifecycle: once the host has started, register, wait until ready,
/// take the public ports over. Superseded (SIGUSR2), it keeps serving while it drains and watches its successor for
/// its rollback window, takes the ports back if the successor dies or stays unhealthy, and otherwise stops the host
/// once both are over. On shutdown (SIGTERM), it steps down if active, drains, lets Kestrel stop, leaves the namespace.
/// </summary>
/// <remarks>
/// Why the superseded generation runs its window before the host stops, not in StoppingAsync as the drain did:
/// once the host is stopping it cannot serve on after a rollback (ApplicationStopping has fired, the shutdown timeout
/// runs, and Kestrel would be stopped with it). So the successor tells it with SIGUSR2, which the host does not hear,
/// and this service calls StopApplication itself when the window and the drain are both over. The drain runs during
/// the window, so an old generation lives max(window, drain), not their sum, but never exits inside the window:
/// closing its listeners there would leave nothing to roll back to while the successor is unproven.
/// </remarks>
internal sealed class HandoffService : IHostedLifecycleService, IDisposable
{
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(15);

    /// <summary>How often the active generation looks for a successor that died before signalling it.</summary>
    internal static readonly TimeSpan SuccessorPollInterval = TimeSpan.FromMilliseconds(500);

    /// <summary>How often a superseded generation probes its successor's private ports during the rollback window.</summary>
    internal static readonly TimeSpan ProbeInterval = TimeSpan.FromMilliseconds(500);

    /// <summary>How long one probe may take before it counts as failed.</summary>
    internal static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Consecutive failed probes after which the successor counts as unhealthy (one may be a pause; three in 1.5 s are not).</summary>
    internal const int UnhealthyAfter = 3;

    private static readonly Meter Meter = new("Switchover");
    private static readonly Counter<long> Rollbacks = Meter.CreateCounter<long>("switchover.rollbacks", unit: "{rollback}",
        description: "Times a superseded generation took the public ports back from its successor.");

    private readonly SwitchoverConfiguration _configuration;
    private readonly SwitchoverOptions _options;
    private readonly LocalGeneration _generation;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly IServiceProvider _services;
    private readonly ILogger _logger;
    private readonly NamespaceName _namespace;
    private readonly SystemdNotifications _systemd;
    private readonly DeployOutcome _outcome;
    private readonly HandoffBackends _backends;
    private readonly CancellationTokenSource _stopping = new();
    private IHandoffBackend? _handoff;
    private Task _takeover = Task.CompletedTask;
    private Task _check = Task.CompletedTask;
    private bool _tookOver;
    private bool _reported;
    private PosixSignalRegistration? _hangup;
    private PosixSignalRegistration? _supersededSignal;
    private readonly SemaphoreSlim _superseded = new(0);
    private Task _supervision = Task.CompletedTask;
    private bool _drained;
    private long _rollbackCount;

    public HandoffService(
        SwitchoverConfiguration configuration,
        LocalGeneration generation,
        IHostApplicationLifetime lifetime,
        IHostEnvironment environment,
        IServiceProvider services,
        SystemdNotifications systemd,
        DeployOutcome outcome,
        HandoffBackends backends,
        ILogger<HandoffService> logger)
    {
        _backends = backends;
        _systemd = systemd;
        _outcome = outcome;
        _configuration = configuration;
        _options = configuration.Options;
        _generation = generation;
        _lifetime = lifetime;
        _services = services;
        _logger = logger;
        _namespace = !configuration.Enabled ? NamespaceName.Parse("disabled")
            : _options.Namespace is { } name ? NamespaceName.Parse(name)
            : NamespaceName.FromApplicationName(environment.ApplicationName);
    }

    private bool Enabled => _configuration.Enabled;

    // The host resolves its hosted services once it is built: the launch waterfall's "host built".
    private readonly DateTime _hostBuilt = DateTime.UtcNow;

    public Task StartingAsync(CancellationToken cancellationToken)
    {
        if (_configuration.Invalid)
        {
            var errors = string.Join(Environment.NewLine, _configuration.Errors.Select(e => "  - " + e));
            Log.InvalidConfiguration(_logger, errors);
            _outcome.Failed(OutcomeKind.StartFailed, "Switchover configuration is invalid:" + Environment.NewLine + errors);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
        else if (!Enabled)
        {
            Log.Disabled(_logger);
            _outcome.Failed(OutcomeKind.StartFailed,
                "Switchover is disabled (Switchover:Mode=Disabled): this process binds its endpoints directly and takes nothing over.");
        }
        else
        {
            ListenForSupersession();
            if (_configuration.ShutdownTimeoutRaised is { } raised)
            {
                Log.ShutdownTimeoutRaised(_logger, raised.From.TotalSeconds, raised.To.TotalSeconds, _configuration.DrainBound.TotalSeconds);
            }

            // Off the critical path: whether this process may change the rules (libnftables loaded, its context open
            // and a dry run of the table, or the agent's answer) is found out while Kestrel binds. The takeover waits
            // for the answer before it registers, and reports its failure.
            _check = Task.Run(() => _backends.Create(_namespace).CheckAsync(_stopping.Token), CancellationToken.None);
        }

        if (Enabled && !_configuration.Invalid && DrainPlan.BoundWarning(_options.Drain, _configuration.KeepAliveTimeout) is { } warning)
        {
            Log.DrainBoundShort(_logger, warning);
        }

        if (Enabled && !_configuration.Invalid && _systemd.IsEnabled)
        {
            // Type=notify-reload (systemd 253) sends SIGHUP to the main process on `systemctl reload`, and SIGHUP ends a
            // .NET process by default. The reload is the next generation (ExecReload=switchover deploy), so this one ignores it.
            _hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                Log.HangupIgnored(_logger);
            });
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// SIGUSR2 says a successor took over (its default action would end the process). Listened for before this
    /// generation registers, so that no successor can ever signal it unheard.
    /// </summary>
    private void ListenForSupersession() =>
        _supersededSignal = PosixSignalRegistration.Create((PosixSignal)Libc.SIGUSR2, context =>
        {
            context.Cancel = true;
            _superseded.Release();
        });

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken)
    {
        if (Enabled)
        {
            // Kestrel is bound by now; ApplicationStarted fires right after the last StartedAsync.
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _lifetime.ApplicationStarted.Register(() => started.TrySetResult());
            _takeover = Task.Run(() => TakeOverAsync(started.Task, _stopping.Token), CancellationToken.None);
        }
        else if (!_configuration.Invalid)
        {
            _lifetime.ApplicationStarted.Register(_systemd.ReadyWithoutHandoff);
        }

        return Task.CompletedTask;
    }

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            if (!_configuration.Invalid)
            {
                _systemd.StoppingWithoutHandoff();
            }

            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        await _takeover.ConfigureAwait(false);
        await _supervision.ConfigureAwait(false);
        if (_drained)
        {
            // Superseded: the window and the drain are over; Kestrel stops now.
            return;
        }

        // A generation that never took over has nothing to drain; one stopped while active steps down first.
        if (_generation.Record is { State: not GenerationState.Starting } record && _handoff is not null)
        {
            var steppedDown = record.State == GenerationState.Active && await StepDownAsync(record).ConfigureAwait(false);
            if (steppedDown)
            {
                Log.SteppedDown(_logger, record.Id);
            }

            // Superseded by a deploy, or stepped down with no successor (then idle connections have nowhere to go).
            var plan = DrainPlan.For(_options.Drain, _configuration.KeepAliveTimeout, superseded: !steppedDown);
            Log.DrainStarted(_logger, record.Id, plan.IdleConnections, plan.KeepAliveTimeout.TotalSeconds, plan.Bound.TotalSeconds, _generation.OpenConnections);
            var drain = new Drain(_generation, _handoff, plan, _logger);

            // The drain gives up at its own bound or when the host's shutdown timeout fires; it never throws out of here,
            // which would make the host rethrow from app.Run() and abort the process.
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bound.CancelAfter(plan.Bound);
            LogDrainFinished(record.Id, await drain.RunAsync(record, bound.Token).ConfigureAwait(false));
        }
    }

    private void LogDrainFinished(long id, DrainReport report)
    {
        var left = report.Connections;
        Log.DrainFinished(_logger, id, report.Elapsed.TotalMilliseconds, report.ReachedQuiet ? "quiet" : "bound reached", left.Open,
            left.Waiting, left.IdlePastKeepAlive, left.Http2, report.OpenAtStart);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppedAsync(CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            return;
        }

        if (_generation.Record is { } record && _handoff is not null)
        {
            await LeaveAsync(record).ConfigureAwait(false);
        }

        if (!_tookOver && !_reported)
        {
            Report(OutcomeKind.Stopped, "it was stopped (SIGTERM, or the host stopping) before it took over");
        }
    }

    public void Dispose()
    {
        _stopping.Dispose();
        _outcome.Dispose();
        _hangup?.Dispose();
        _supersededSignal?.Dispose();
        _superseded.Dispose();
    }

    private async Task TakeOverAsync(Task started, CancellationToken cancellationToken)
    {
        var launchedAt = ProcessIdentity.Current.StartedAtUtc();
        try
        {
            await started.WaitAsync(cancellationToken).ConfigureAwait(false);
            var bound = DateTime.UtcNow;
            // In this process, or through the agent for an app without privileges (Switchover:Agent).
            var handoff = _backends.Create(_namespace);

            // Before anything can fail: a reload whose generation fails a check below must give systemd its READY back.
            _systemd.Starting(ReadState());
            var ports = EndpointPlan();

            // Readiness (the app's health checks and a request to its own private ports on loopback) needs nothing
            // of the checks or the registration, so it runs beside them: the launch waits for the longer of the two,
            // not for both in turn. Only the takeover waits for all.
            using var readinessStop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var readinessCheck = new Readiness(AppHealthChecks.Find(_services), _options, _logger);
            var readiness = readinessCheck.WaitAsync(ports, TlsPorts(), readinessStop.Token);
            Registration registration;
            DateTime checkedAt;
            try
            {
                await _check.WaitAsync(cancellationToken).ConfigureAwait(false);
                checkedAt = DateTime.UtcNow;
                registration = await handoff.RegisterAsync(ProcessIdentity.Current, ports, _options.Steering, _options.RollbackWindow, cancellationToken)
                    .ConfigureAwait(false);
            }
            catch
            {
                await readinessStop.CancelAsync().ConfigureAwait(false);
                await readiness.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
                throw;
            }

            _generation.Record = registration.Generation;
            _handoff = handoff;
            var record = registration.Generation;
            LogStale(registration.StaleRemoved);
            Log.Registered(_logger, record.Id, _namespace.Value, record.Pid, Describe(ports));
            var registered = DateTime.UtcNow;
            _outcome.Registered(_namespace, record.Id);

            await readiness.ConfigureAwait(false);
            var ready = readinessCheck.ReadyAt;
            Log.Ready(_logger, record.Id, (ready - launchedAt).TotalMilliseconds);

            // systemd hears MAINPID before the previous generation is told to drain, so it never sees the main pid exit.
            var result = await handoff.TakeOverAsync(record.Id, cancellationToken, (taken, state) => _systemd.TookOver(taken.Generation, state))
                .ConfigureAwait(false);
            _generation.Record = result.Generation;
            _tookOver = true;
            LogStale(result.StaleRemoved);
            var launchToServing = (DateTime.UtcNow - launchedAt).TotalMilliseconds;

            Log.TookOver(_logger, _namespace.Value,
                result.Previous.Count == 0 ? "(none)" : string.Join(",", result.Previous.Select(g => g.Id)),
                record.Id,
                result.Previous.Count == 0 ? "(none)" : string.Join(",", result.Previous.Select(g => Describe(g.Ports))),
                Describe(ports),
                result.RuleTransaction.TotalMilliseconds,
                launchToServing);
            Log.Ruleset(_logger, result.Ruleset);
            Log.Waterfall(_logger, record.Id, (_hostBuilt - launchedAt).TotalMilliseconds, (bound - launchedAt).TotalMilliseconds,
                (checkedAt - launchedAt).TotalMilliseconds, (registered - launchedAt).TotalMilliseconds, (ready - launchedAt).TotalMilliseconds,
                result.RuleTransaction.TotalMilliseconds, launchToServing);
            if (result.SignalFailures.Count > 0)
            {
                _ = Task.Run(() => RetrySignalsAsync(result.SignalFailures, _stopping.Token), CancellationToken.None);
            }

            _outcome.TookOver(launchToServing);
            if (_outcome.WriteError is { } error)
            {
                Log.OutcomeNotWritten(_logger, error);
            }

            // Supervision starts only now, once the ports are this generation's: started with the takeover, it waited
            // for it, and compiling its wait competed with the launch for the cores. StoppingAsync awaits the takeover
            // before it awaits the supervision, so it always sees this task.
            _supervision = SuperviseAsync(_stopping.Token);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped before taking over; StoppedAsync leaves the namespace and reports it.
        }
        catch (SupersededException e)
        {
            Log.Superseded(_logger, _generation.Record?.Id ?? 0, e.Message);
            await FailAsync(OutcomeKind.Superseded, e.Message).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            // Readiness gave up: the health checks or the request to its own private port never succeeded.
            Log.StartFailed(_logger, e.Message, e);
            await FailAsync(OutcomeKind.Unhealthy, e.Message).ConfigureAwait(false);
        }
        catch (StateException e) when (e.IsLockTimeout)
        {
            Log.StartFailed(_logger, e.Message, e);
            await FailAsync(OutcomeKind.LockTimeout, e.Message).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Log.StartFailed(_logger, e.Message, e);
            await FailAsync(OutcomeKind.StartFailed, e.Message).ConfigureAwait(false);
        }
    }

    /// <summary>Once this generation took over: each SIGUSR2 (a successor took over) runs the window and the drain.</summary>
    private async Task SuperviseAsync(CancellationToken stopping)
    {
        try
        {
            while (true)
            {
                // Until it hears that it was superseded, the active generation also looks for a successor that died
                // between its kernel transaction and its signal (no one else watches it then, without an agent; the
                // agent holds a pidfd for every generation, so under it there is nothing to poll).
                var poll = _handoff is LocalHandoffBackend ? SuccessorPollInterval : Timeout.InfiniteTimeSpan;
                while (!await _superseded.WaitAsync(poll, stopping).ConfigureAwait(false))
                {
                    await RepairIfSuccessorDiedAsync().ConfigureAwait(false);
                }

                if (await RunSupersededAsync(stopping).ConfigureAwait(false))
                {
                    _drained = true;
                    _lifetime.StopApplication();
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // The host stops: StoppingAsync drains (again, from the start) what is left.
        }
        catch (Exception e)
        {
            // Never leave a superseded generation running forever: stop, and let StoppingAsync drain.
            Log.RollbackFailed(_logger, _generation.Record?.Id ?? 0, "the supervision of the successor failed; this generation stops: " + e.Message, e);
            _lifetime.StopApplication();
        }
    }

    /// <summary>
    /// A successor that died after its transaction (the public ports point at it, or the transaction is pending) but
    /// before this generation was signalled: repair, which gives the ports back here. Polled with the local backend
    /// only (see SuperviseAsync). Bounded by <see cref="SuccessorPollInterval"/>.
    /// </summary>
    private async Task RepairIfSuccessorDiedAsync()
    {
        if (_handoff is null || _generation.Record is not { } record || ReadState() is not { } state)
        {
            return;
        }

        var dead = state.Generations.Where(g => g.Id > record.Id && !g.Process.IsAlive()).ToList();
        var exposed = state.Active is { } active && dead.Any(g => g.Id == active.Id);
        if (dead.Count == 0 || !(exposed || state.TransactionPending))
        {
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(CleanupTimeout);
            var repair = await _handoff.RepairAsync(timeout.Token).ConfigureAwait(false);
            Log.RepairedDeadSuccessor(_logger, dead.Max(g => g.Id), record.Id,
                repair.Active is { } a ? $"generation {a.Id} holds the ports" : "the public ports are not steered until the next generation takes over");
        }
        catch (Exception e) when (e is not OperationCanceledException || !_stopping.IsCancellationRequested)
        {
            Log.RollbackFailed(_logger, record.Id, "repairing after a successor died mid-takeover failed (tried again): " + e.Message, e);
        }
    }

    private enum WatchVerdict
    {
        WindowOver,
        RolledBack,
        Stopping,
    }

    /// <summary>
    /// Superseded: drains and, for the rollback window, watches the successor. True when drained and the host should
    /// stop; false when this generation serves on (rolled back to, or the SIGUSR2 was stale) or the host is stopping.
    /// </summary>
    private async Task<bool> RunSupersededAsync(CancellationToken stopping)
    {
        var state = ReadState();
        if (_generation.Record is not { } record || state?.Find(record.Id) is not { State: GenerationState.Draining } me)
        {
            return false;
        }

        _generation.Record = me;
        var window = me.RollbackUntil is { } until ? until - DateTimeOffset.UtcNow : TimeSpan.Zero;
        var successor = state.Active;
        var plan = DrainPlan.For(_options.Drain, _configuration.KeepAliveTimeout, superseded: true);
        using var drainStop = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        drainStop.CancelAfter(plan.Bound);
        Log.DrainStarted(_logger, me.Id, plan.IdleConnections, plan.KeepAliveTimeout.TotalSeconds, plan.Bound.TotalSeconds, _generation.OpenConnections);
        var drain = new Drain(_generation, _handoff!, plan, _logger).RunAsync(me, drainStop.Token);
        var verdict = WatchVerdict.WindowOver;
        string? why = null;
        GenerationRecord? from = successor;
        if (window > TimeSpan.Zero && successor is not null)
        {
            Log.WatchingSuccessor(_logger, me.Id, successor.Id, window.TotalMilliseconds);
            (verdict, from, why) = await WatchSuccessorAsync(me, successor, window, stopping).ConfigureAwait(false);
        }

        if (verdict == WatchVerdict.WindowOver && window > TimeSpan.Zero)
        {
            using var timeout = new CancellationTokenSource(CleanupTimeout);
            if (await _handoff!.EndRollbackWindowAsync(me.Id, timeout.Token).ConfigureAwait(false) == GenerationState.Active)
            {
                (verdict, why) = (WatchVerdict.RolledBack, "gave the ports back to this generation (switchover rollback, or a repair)");
            }
            else
            {
                Log.RollbackWindowEnded(_logger, me.Id);
            }
        }

        if (verdict == WatchVerdict.RolledBack)
        {
            await drainStop.CancelAsync().ConfigureAwait(false);
            await drain.ConfigureAwait(false);
            _generation.StopDraining();
            var now = ReadState();
            _generation.Record = now?.Find(me.Id) ?? me;
            Rollbacks.Add(1);
            Log.RolledBack(_logger, _namespace.Value, from?.Id ?? 0, why ?? "is gone", me.Id, Interlocked.Increment(ref _rollbackCount));
            _systemd.TookOver(_generation.Record, now);
            return false;
        }

        if (verdict == WatchVerdict.Stopping)
        {
            await drain.ConfigureAwait(false);
            return false;
        }

        // Past the window: the successor is no longer watched for health, but if it dies while this generation still
        // drains, its rule and guard go (the ports are then not steered at all, rather than steered to nothing).
        var active = ReadState()?.Active;
        using var exit = active is null || active.Id == me.Id ? null : ProcessExitWatch.Start(active.Process);
        if (exit is not null && await Task.WhenAny(drain, exit.Exited).ConfigureAwait(false) == exit.Exited)
        {
            try
            {
                using var timeout = new CancellationTokenSource(CleanupTimeout);
                var repair = await _handoff!.RepairAsync(timeout.Token).ConfigureAwait(false);
                Log.RepairedAfterWindow(_logger, active!.Id, me.Id,
                    repair.Active is { } a ? $"generation {a.Id} holds the ports" : "the public ports are not steered until the next generation takes over");
            }
            catch (Exception e) when (e is StateException or NftException or OperationCanceledException)
            {
                Log.RollbackFailed(_logger, me.Id, "removing the rules of the dead successor failed: " + e.Message, e);
            }
        }

        var report = await drain.ConfigureAwait(false);
        LogDrainFinished(me.Id, report);
        return !stopping.IsCancellationRequested;
    }

    /// <summary>
    /// Watches the active generation until the window is over: through a pidfd for its death (then a repair, which
    /// gives the ports to the newest generation still in its window), and, for the direct successor, through its
    /// private ports for its health (then a forced rollback from it, and only from it).
    /// </summary>
    private async Task<(WatchVerdict Verdict, GenerationRecord? From, string? Why)> WatchSuccessorAsync(
        GenerationRecord me, GenerationRecord successor, TimeSpan window, CancellationToken stopping)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(window.TotalSeconds * Stopwatch.Frequency);
        TimeSpan Remaining() => TimeSpan.FromSeconds((double)(deadline - Stopwatch.GetTimestamp()) / Stopwatch.Frequency);
        var tls = TlsPorts();
        var active = successor;
        var failures = 0;
        while (Remaining() > TimeSpan.Zero)
        {
            using var exit = ProcessExitWatch.Start(active.Process);
            while (true)
            {
                var remaining = Remaining();
                if (remaining <= TimeSpan.Zero)
                {
                    return (WatchVerdict.WindowOver, null, null);
                }

                var probe = active.Id == successor.Id
                    ? Readiness.ProbeAsync(_options, active.Ports, tls, ProbeTimeout, stopping)
                    : Task.FromResult<string?>(null);
                var tick = Task.Delay(remaining < ProbeInterval ? remaining : ProbeInterval, stopping);
                await Task.WhenAny(exit.Exited, Task.WhenAll(probe, tick)).ConfigureAwait(false);
                if (stopping.IsCancellationRequested)
                {
                    return (WatchVerdict.Stopping, null, null);
                }

                if (exit.Exited.IsCompleted)
                {
                    var detected = Stopwatch.StartNew();
                    var repaired = await TryAsync(me, h => h.RepairAsync(CancellationToken.None), r => r.Active?.Id == me.Id).ConfigureAwait(false);
                    if (repaired)
                    {
                        return (WatchVerdict.RolledBack, active,
                            string.Create(CultureInfo.InvariantCulture, $"died (its pidfd said so; the ports were back {detected.Elapsed.TotalMilliseconds:0} ms later)"));
                    }

                    break;
                }

                var now = ReadState();
                if (now?.Find(me.Id) is { State: GenerationState.Active })
                {
                    return (WatchVerdict.RolledBack, active, "was rolled back from (switchover rollback, or a repair)");
                }

                if (now?.Active is not { } current)
                {
                    // Nobody holds the ports and nobody died holding them: the service was stopped on purpose (the
                    // active generation stepped down). Nothing to roll back for.
                    return (WatchVerdict.WindowOver, null, null);
                }

                if (current.Id != active.Id)
                {
                    // Another generation took over: watch whoever holds the ports now.
                    break;
                }

                var reason = await probe.ConfigureAwait(false);
                failures = reason is null ? 0 : failures + 1;
                if (reason is not null)
                {
                    Log.SuccessorUnhealthy(_logger, active.Id, failures, reason);
                }

                if (failures >= UnhealthyAfter)
                {
                    RollbackResult? result = null;
                    var rolledBack = await TryAsync(me, async h => result = await h.RollbackAsync(me.Id, force: true, from: active.Id, CancellationToken.None).ConfigureAwait(false),
                        r => r.Outcome is RollbackOutcome.RolledBack or RollbackOutcome.AlreadyActive).ConfigureAwait(false);
                    if (rolledBack)
                    {
                        return (WatchVerdict.RolledBack, active, $"failed {failures} health probes in a row ({reason})");
                    }

                    if (result?.Outcome == RollbackOutcome.NotPossible)
                    {
                        return (WatchVerdict.WindowOver, null, null);
                    }

                    failures = 0;
                    break;
                }
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), stopping).ConfigureAwait(false);
            var next = ReadState();
            if (next?.Find(me.Id) is { State: GenerationState.Active })
            {
                return (WatchVerdict.RolledBack, active, "was rolled back from");
            }

            if (next?.Active is not { } a)
            {
                return (WatchVerdict.WindowOver, null, null);
            }

            active = a;
        }

        return (WatchVerdict.WindowOver, null, null);
    }

    /// <summary>Runs a rollback step with its own timeout; failures are logged and read as "not done".</summary>
    private async Task<bool> TryAsync<T>(GenerationRecord me, Func<IHandoffBackend, Task<T>> step, Func<T, bool> done)
    {
        try
        {
            return done(await step(_handoff!).ConfigureAwait(false));
        }
        catch (Exception e) when (e is StateException or NftException or InvalidOperationException)
        {
            Log.RollbackFailed(_logger, me.Id, e.Message, e);
            return false;
        }
    }

    /// <summary>
    /// Tells previous generations again that they were superseded, with growing pauses (1 s to 30 s, ten times): a
    /// failed signal never undoes the takeover, but a generation that never hears it never drains.
    /// </summary>
    private async Task RetrySignalsAsync(IReadOnlyList<SignalFailure> failures, CancellationToken stopping)
    {
        var delay = TimeSpan.FromSeconds(1);
        foreach (var failure in failures)
        {
            Log.SignalFailed(_logger, failure.Generation.Id, failure.Generation.Pid, 1, delay.TotalSeconds, failure.Error);
        }

        var pending = failures.Select(f => f.Generation).ToList();
        for (var attempt = 2; attempt <= 10 && pending.Count > 0; attempt++)
        {
            try
            {
                await Task.Delay(delay, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            delay = TimeSpan.FromSeconds(Math.Min(delay.TotalSeconds * 2, 30));
            foreach (var generation in pending.ToList())
            {
                try
                {
                    if (await _handoff!.SignalToDrainAsync(generation.Id, stopping).ConfigureAwait(false) is { } failure)
                    {
                        Log.SignalFailed(_logger, generation.Id, generation.Pid, attempt, delay.TotalSeconds, failure.Error);
                        continue;
                    }

                    Log.SignalDelivered(_logger, generation.Id, generation.Pid, attempt);
                }
                catch (Exception e) when (e is StateException or OperationCanceledException)
                {
                    continue;
                }

                pending.Remove(generation);
            }
        }
    }

    /// <summary>What Kestrel bound, as the generation's ports; refused endpoints stop the generation here, before it registers.</summary>
    private IReadOnlyList<PortMapping> EndpointPlan()
    {
        foreach (var endpoint in _generation.EndpointsLeftAlone)
        {
            Log.EndpointLeftAlone(_logger, endpoint.ToString() ?? endpoint.GetType().Name);
        }

        var refused = _generation.RefusedEndpoints;
        if (refused.Count > 0)
        {
            throw new InvalidOperationException(
                "The app's endpoints cannot be taken over; nothing was bound or changed:" + Environment.NewLine +
                string.Join(Environment.NewLine, refused.Select(r => "  - " + r)));
        }

        var ports = _generation.BoundPorts();
        return ports.Count > 0
            ? ports
            : throw new InvalidOperationException(
                "The app has no TCP endpoint to hand over (only Unix sockets, or none). Configure one (e.g. --urls http://*:8080), or set Switchover:Mode=Disabled.");
    }

    /// <summary>The public ports Kestrel serves over TLS, from the addresses it reports (https://...:PORT).</summary>
    private HashSet<int> TlsPorts()
    {
        var addresses = _services.GetService<IServer>()?.Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        var ports = new HashSet<int>();
        foreach (var address in addresses.Where(a => a.StartsWith("https://", StringComparison.OrdinalIgnoreCase)))
        {
            var colon = address.LastIndexOf(':');
            if (colon > 0 && int.TryParse(address.AsSpan(colon + 1).TrimEnd('/'), System.Globalization.NumberStyles.None,
                    System.Globalization.CultureInfo.InvariantCulture, out var port))
            {
                ports.Add(port);
            }
        }

        return ports;
    }

    private async Task<bool> StepDownAsync(GenerationRecord record)
    {
        using var timeout = new CancellationTokenSource(CleanupTimeout);
        try
        {
            return await _handoff!.StepDownAsync(record.Id, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Log.LeaveFailed(_logger, record.Id, e.Message, e);
            return false;
        }
    }

    private async Task FailAsync(OutcomeKind kind, string reason)
    {
        if (_generation.Record is { } record && _handoff is not null)
        {
            await LeaveAsync(record).ConfigureAwait(false);
            _generation.Record = null;
        }

        Report(kind, reason);
        Environment.ExitCode = 1;
        _lifetime.StopApplication();
    }

    /// <summary>Tells systemd and the waiting deploy (if any) that this generation will not take over.</summary>
    private void Report(OutcomeKind kind, string reason)
    {
        _reported = true;
        _systemd.DidNotTakeOver(reason, ReadState());
        _outcome.Failed(kind, reason);
        if (_outcome.WriteError is { } error)
        {
            Log.OutcomeNotWritten(_logger, error);
        }
    }

    /// <summary>The namespace's state as it is now, without the lock (for what systemd is told); null when unreadable.</summary>
    private NamespaceState? ReadState()
    {
        try
        {
            return new StateStore(_options.StateDirectory, _namespace).ReadUnlocked();
        }
        catch (Exception e) when (e is StateException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private async Task LeaveAsync(GenerationRecord record)
    {
        // Cleanup runs even when the host's shutdown token has fired, with a timeout of its own.
        using var timeout = new CancellationTokenSource(CleanupTimeout);
        try
        {
            var last = await _handoff!.LeaveAsync(record.Id, timeout.Token).ConfigureAwait(false);
            Log.Left(_logger, record.Id, _namespace.Value, last ? "; it was the last, so its table and state were removed" : string.Empty);
            _systemd.Left(last, last ? null : ReadState());
        }
        catch (Exception e)
        {
            Log.LeaveFailed(_logger, record.Id, e.Message, e);
        }
    }

    private void LogStale(IReadOnlyList<GenerationRecord> stale)
    {
        if (stale.Count > 0)
        {
            Log.StaleRemoved(_logger, stale.Count, string.Join(", ", stale.Select(g => $"{g.Id} (pid {g.Pid})")));
        }
    }

    private static string Describe(IEnumerable<PortMapping> ports) =>
        string.Join(",", ports.Select(p => $"{p.Public}->{p.PrivatePort}"));
}
