using Microsoft.Extensions.Logging;

namespace Switchover.Hosting;

/// <summary>Switchover's log messages. Event ids are stable; never reuse a removed one.</summary>
/// <remarks>
/// Not <c>[LoggerMessage]</c>: its generated code gives each message a state type of its own
/// (<c>LoggerMessage.LogValues&lt;...&gt;</c> over the message's argument types, or a struct of its own), and every
/// generation then JIT-compiles the framework's logging generics (<c>Logger.Log&lt;TState&gt;</c>, the console
/// logger's, <c>LogEntry&lt;TState&gt;</c>, the formatter's, the debug and event source loggers') once per state type:
/// over our types they are in no ReadyToRun image. Through <see cref="LoggerExtensions"/> every message has the
/// framework's <c>FormattedLogValues</c> as its state, whose instantiations the host's own messages
/// (<c>Microsoft.Hosting.Lifetime</c>) compile anyway (docs/kernel-speed.md, "One log state"). A logging provider sees
/// the same: the same event ids and names, the text formatted with the invariant culture by the same formatter as
/// <c>LoggerMessage.Define</c>, the template's properties with their values and <c>{OriginalFormat}</c>
/// (tests/Switchover.Tests/LogTests.cs holds each). Each message checks its level first, so a disabled one boxes and
/// formats nothing. The arguments go in the template's order: they fill its holes by position, not by name.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1848:Use the LoggerMessage delegates",
    Justification = "One state type for all messages (remarks). The rule's reasons do not apply: the framework caches each template's parsed form, and each method checks IsEnabled before it boxes an argument.")]
internal static class Log
{
    public static void Disabled(ILogger logger)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(1, nameof(Disabled)),
                "Switchover is disabled (Switchover:Mode=Disabled); the configured endpoints are bound directly.");
        }
    }

    public static void Registered(ILogger logger, long generationId, string @namespace, int pid, string ports)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(2, nameof(Registered)),
                "Generation {GenerationId} of namespace '{Namespace}' registered (pid {Pid}); private ports {Ports}; waiting until it is ready.",
                generationId, @namespace, pid, ports);
        }
    }

    public static void Ready(ILogger logger, long generationId, double readyMs)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(3, nameof(Ready)),
                "Generation {GenerationId} is ready after {ReadyMs:0} ms.",
                generationId, readyMs);
        }
    }

    public static void TookOver(ILogger logger, string @namespace, string previousIds, long generationId, string previousPorts, string ports, double transactionMs, double launchToServingMs)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(4, nameof(TookOver)),
                "Handoff in namespace '{Namespace}': generation {PreviousIds} -> {GenerationId}, {PreviousPorts} -> {Ports}; rule transaction {TransactionMs:0.0} ms, launch to serving {LaunchToServingMs:0} ms.",
                @namespace, previousIds, generationId, previousPorts, ports, transactionMs, launchToServingMs);
        }
    }

    public static void Superseded(ILogger logger, long generationId, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(5, nameof(Superseded)),
                "Generation {GenerationId} steps aside: {Reason}",
                generationId, reason);
        }
    }

    public static void StartFailed(ILogger logger, string reason, Exception exception)
    {
        if (logger.IsEnabled(LogLevel.Critical))
        {
            logger.Log(LogLevel.Critical, new EventId(6, nameof(StartFailed)), exception,
                "Switchover: this generation did not take over and exits; the previous generation keeps serving. {Reason}",
                reason);
        }
    }

    public static void DrainStarted(ILogger logger, long generationId, IdleConnectionPolicy policy, double keepAliveSeconds, double boundSeconds, int connections)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(7, nameof(DrainStarted)),
                "Generation {GenerationId} drains: listeners stay open until accept queues and half-open flows are gone; idle connections: {Policy} (keep-alive timeout {KeepAliveSeconds:0} s, drain bound {BoundSeconds:0} s); {Connections} connection(s) open.",
                generationId, policy, keepAliveSeconds, boundSeconds, connections);
        }
    }

    public static void DrainFinished(ILogger logger, long generationId, double elapsedMs, string outcome, int connections, int waiting, int pastKeepAlive, int http2, int openAtStart)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(8, nameof(DrainFinished)),
                "Generation {GenerationId} drained in {ElapsedMs:0} ms ({Outcome}); {Connections} connection(s) still open ({Waiting} with a client still to come back, {PastKeepAlive} idle past the keep-alive timeout, {Http2} HTTP/2) of {OpenAtStart} at the start; stopping Kestrel.",
                generationId, elapsedMs, outcome, connections, waiting, pastKeepAlive, http2, openAtStart);
        }
    }

    public static void Left(ILogger logger, long generationId, string @namespace, string last)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(9, nameof(Left)),
                "Generation {GenerationId} left namespace '{Namespace}'{Last}.",
                generationId, @namespace, last);
        }
    }

    public static void Ruleset(ILogger logger, string ruleset)
    {
        if (logger.IsEnabled(LogLevel.Debug))
        {
            logger.Log(LogLevel.Debug, new EventId(10, nameof(Ruleset)),
                "Applied ruleset:\n{Ruleset}",
                ruleset);
        }
    }

    public static void StaleRemoved(ILogger logger, int count, string generations)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(11, nameof(StaleRemoved)),
                "Removed {Count} stale generation(s) whose process is gone: {Generations}",
                count, generations);
        }
    }

    public static void ConntrackUnavailable(ILogger logger, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(12, nameof(ConntrackUnavailable)),
                "Could not read conntrack while draining; relying on the accept queues only: {Reason}",
                reason);
        }
    }

    public static void LeaveFailed(ILogger logger, long generationId, string reason, Exception exception)
    {
        if (logger.IsEnabled(LogLevel.Error))
        {
            logger.Log(LogLevel.Error, new EventId(13, nameof(LeaveFailed)), exception,
                "Generation {GenerationId} could not remove itself from the namespace state: {Reason}",
                generationId, reason);
        }
    }

    public static void InvalidConfiguration(ILogger logger, string errors)
    {
        if (logger.IsEnabled(LogLevel.Critical))
        {
            logger.Log(LogLevel.Critical, new EventId(15, nameof(InvalidConfiguration)),
                "Switchover configuration is invalid; nothing was bound and nothing was changed. Fix these and start again:\n{Errors}",
                errors);
        }
    }

    public static void SteppedDown(ILogger logger, long generationId)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(16, nameof(SteppedDown)),
                "Generation {GenerationId} was stopped with no successor: the public ports no longer point at it; connections to them are refused until the next generation takes over.",
                generationId);
        }
    }

    public static void NotReady(ILogger logger, string reason)
    {
        if (logger.IsEnabled(LogLevel.Debug))
        {
            logger.Log(LogLevel.Debug, new EventId(14, nameof(NotReady)),
                "Not ready yet: {Reason}",
                reason);
        }
    }

    public static void EndpointLeftAlone(ILogger logger, string endpoint)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(17, nameof(EndpointLeftAlone)),
                "Endpoint {Endpoint} is not a TCP address (a Unix socket): bound as configured, not handed over.",
                endpoint);
        }
    }

    public static void SystemdNotifyFailed(ILogger logger, string message, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(18, nameof(SystemdNotifyFailed)),
                "Could not notify systemd ({Message}): {Reason}. Check NOTIFY_SOCKET and the unit's NotifyAccess=all.",
                message, reason);
        }
    }

    public static void OutcomeNotWritten(ILogger logger, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(19, nameof(OutcomeNotWritten)),
                "Could not record this generation's outcome for switchover deploy: {Reason}",
                reason);
        }
    }

    public static void HangupIgnored(ILogger logger)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(20, nameof(HangupIgnored)),
                "SIGHUP ignored: under systemd a reload is the next generation, started by ExecReload=switchover deploy.");
        }
    }

    public static void CertificateReloaded(ILogger logger, string path, string oldThumbprint, string newThumbprint)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(21, nameof(CertificateReloaded)),
                "Certificate {Path} changed on disk: new TLS handshakes get {NewThumbprint} (was {OldThumbprint}); open connections keep theirs.",
                path, newThumbprint, oldThumbprint);
        }
    }

    public static void CertificateNotReloaded(ILogger logger, string path, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(22, nameof(CertificateNotReloaded)),
                "Certificate {Path} changed on disk but does not load ({Reason}); the previous one is served until it does.",
                path, reason);
        }
    }

    public static void Waterfall(ILogger logger, long generationId, double hostBuiltMs, double boundMs, double checkedMs, double registeredMs, double readyMs, double transactionMs, double servingMs)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(23, nameof(Waterfall)),
                "Launch waterfall of generation {GenerationId}, ms after the process started: host built {HostBuiltMs:0}, Kestrel bound {BoundMs:0}, checks {CheckedMs:0}, registered {RegisteredMs:0}, ready {ReadyMs:0}, took over {ServingMs:0} (rule transaction {TransactionMs:0.0}, state written and previous signalled within).",
                generationId, hostBuiltMs, boundMs, checkedMs, registeredMs, readyMs, servingMs, transactionMs);
        }
    }

    // 40-49: the drain's idle-connection policy (issue 9).
    public static void DrainWaitsForClients(ILogger logger, long generationId, int busy, int idle, double longestIdleSeconds, double keepAliveSeconds, double boundSeconds)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(40, nameof(DrainWaitsForClients)),
                "Generation {GenerationId} waits for its clients: {Busy} connection(s) with a request in progress, {Idle} idle (longest {LongestIdleSeconds:0.0} s); each closes after its next request (answered with Connection: close) or when its client closes it, at the latest after the keep-alive timeout of {KeepAliveSeconds:0} s (drain bound {BoundSeconds:0} s).",
                generationId, busy, idle, longestIdleSeconds, keepAliveSeconds, boundSeconds);
        }
    }

    public static void ShutdownTimeoutRaised(ILogger logger, double fromSeconds, double toSeconds, double boundSeconds)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(41, nameof(ShutdownTimeoutRaised)),
                "The host's ShutdownTimeout was raised from {FromSeconds:0} s to {ToSeconds:0} s: a superseded generation drains for up to {BoundSeconds:0} s (Switchover:Drain:MaxDuration, or the keep-alive timeout plus 10 s) inside the host's shutdown, and Kestrel needs time to stop after it. For shorter drains set Switchover:Drain:MaxDuration, or Switchover:Drain:IdleConnections=CloseAfterQuiet.",
                fromSeconds, toSeconds, boundSeconds);
        }
    }

    public static void DrainBoundShort(ILogger logger, string warning)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(42, nameof(DrainBoundShort)),
                "{Warning}",
                warning);
        }
    }

    // 60-69: the rollback window and signals to superseded generations.
    public static void SignalFailed(ILogger logger, long generationId, int pid, int attempt, double retrySeconds, string error)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(60, nameof(SignalFailed)),
                "Could not tell generation {GenerationId} (pid {Pid}) that it was superseded (attempt {Attempt}); the takeover stands, that generation keeps serving the connections it has until it hears it; retrying in {RetrySeconds:0} s. {Error}",
                generationId, pid, attempt, retrySeconds, error);
        }
    }

    public static void WatchingSuccessor(ILogger logger, long generationId, long successorId, double windowMs)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(61, nameof(WatchingSuccessor)),
                "Generation {GenerationId} was superseded by generation {SuccessorId}: it drains, and watches it for its rollback window of {WindowMs:0} ms.",
                generationId, successorId, windowMs);
        }
    }

    public static void RolledBack(ILogger logger, string @namespace, long fromId, string reason, long generationId, long count)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(62, nameof(RolledBack)),
                "Rollback in namespace '{Namespace}': generation {FromId} {Reason}; generation {GenerationId} holds the public ports again and stops draining ({Count} rollback(s) by this process).",
                @namespace, fromId, reason, generationId, count);
        }
    }

    public static void RollbackWindowEnded(ILogger logger, long generationId)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(63, nameof(RollbackWindowEnded)),
                "Generation {GenerationId}'s rollback window is over: it can no longer take the ports back, and stops once drained.",
                generationId);
        }
    }

    public static void SuccessorUnhealthy(ILogger logger, long successorId, int failures, string reason)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(64, nameof(SuccessorUnhealthy)),
                "Generation {SuccessorId} failed the health probe on its private ports ({Failures} in a row): {Reason}",
                successorId, failures, reason);
        }
    }

    public static void RepairedAfterWindow(ILogger logger, long successorId, long generationId, string outcome)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(65, nameof(RepairedAfterWindow)),
                "Generation {SuccessorId} died after generation {GenerationId}'s rollback window: its rule and guard were removed ({Outcome}).",
                successorId, generationId, outcome);
        }
    }

    public static void RollbackFailed(ILogger logger, long generationId, string reason, Exception? exception)
    {
        if (logger.IsEnabled(LogLevel.Error))
        {
            logger.Log(LogLevel.Error, new EventId(66, nameof(RollbackFailed)), exception,
                "Generation {GenerationId} could not take the ports back: {Reason}",
                generationId, reason);
        }
    }

    public static void RepairedDeadSuccessor(ILogger logger, long successorId, long generationId, string outcome)
    {
        if (logger.IsEnabled(LogLevel.Warning))
        {
            logger.Log(LogLevel.Warning, new EventId(68, nameof(RepairedDeadSuccessor)),
                "Generation {SuccessorId} died in the middle of taking over from generation {GenerationId}, before it was told: the namespace was repaired ({Outcome}).",
                successorId, generationId, outcome);
        }
    }

    public static void SignalDelivered(ILogger logger, long generationId, int pid, int attempt)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, new EventId(67, nameof(SignalDelivered)),
                "Generation {GenerationId} (pid {Pid}) heard that it was superseded, at attempt {Attempt}.",
                generationId, pid, attempt);
        }
    }
}
