using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Drives this process through the generation lifecycle: once the host has started, register, wait until ready,
/// take the public ports over; on shutdown, drain, let Kestrel stop, leave the namespace.
/// </summary>
internal sealed class HandoffService : IHostedLifecycleService, IDisposable
{
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(15);

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
    private bool _tookOver;
    private bool _reported;
    private PosixSignalRegistration? _hangup;

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
        else if (_systemd.IsEnabled)
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
        // A generation that never took over has nothing to drain; one stopped while active steps down first.
        if (_generation.Record is { State: not GenerationState.Starting } record && _handoff is not null)
        {
            if (record.State == GenerationState.Active && await StepDownAsync(record).ConfigureAwait(false))
            {
                Log.SteppedDown(_logger, record.Id);
            }

            Log.DrainStarted(_logger, record.Id);
            var drain = new Drain(_generation, _handoff, _options.Drain, _logger);

            // The drain gives up at its own bound or when the host's shutdown timeout fires; it never throws out of here,
            // which would make the host rethrow from app.Run() and abort the process.
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bound.CancelAfter(_options.Drain.MaxDuration);
            var report = await drain.RunAsync(record, bound.Token).ConfigureAwait(false);
            Log.DrainFinished(_logger, record.Id, report.Elapsed.TotalMilliseconds, report.ReachedQuiet ? "quiet" : "bound reached", report.OpenConnections);
        }
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
    }

    private async Task TakeOverAsync(Task started, CancellationToken cancellationToken)
    {
        var launchedAt = Process.GetCurrentProcess().StartTime.ToUniversalTime();
        try
        {
            await started.WaitAsync(cancellationToken).ConfigureAwait(false);
            // In this process, or through the agent for an app without privileges (Switchover:Agent).
            var handoff = _backends.Create(_namespace);

            // Before anything can fail: a reload whose generation fails a check below must give systemd its READY back.
            _systemd.Starting(ReadState());
            await handoff.CheckAsync(cancellationToken).ConfigureAwait(false);

            var ports = EndpointPlan();
            var registration = await handoff.RegisterAsync(ProcessIdentity.Current, ports, _options.Steering, cancellationToken).ConfigureAwait(false);
            _generation.Record = registration.Generation;
            _handoff = handoff;
            var record = registration.Generation;
            LogStale(registration.StaleRemoved);
            Log.Registered(_logger, record.Id, _namespace.Value, record.Pid, Describe(ports));
            _outcome.Registered(_namespace, record.Id);

            var readiness = new Readiness(_services.GetService<HealthCheckService>(), _options, _logger);
            await readiness.WaitAsync(ports, TlsPorts(), cancellationToken).ConfigureAwait(false);
            Log.Ready(_logger, record.Id, (DateTime.UtcNow - launchedAt).TotalMilliseconds);

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
            _outcome.TookOver(launchToServing);
            if (_outcome.WriteError is { } error)
            {
                Log.OutcomeNotWritten(_logger, error);
            }
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
