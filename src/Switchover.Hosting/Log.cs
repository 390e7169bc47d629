using Microsoft.Extensions.Logging;

namespace Switchover.Hosting;

/// <summary>Switchover's log messages. Event ids are stable; never reuse a removed one.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Switchover is disabled (Switchover:Mode=Disabled); the configured endpoints are bound directly.")]
    public static partial void Disabled(ILogger logger);

    [LoggerMessage(2, LogLevel.Information, "Generation {GenerationId} of namespace '{Namespace}' registered (pid {Pid}); private ports {Ports}; waiting until it is ready.")]
    public static partial void Registered(ILogger logger, long generationId, string @namespace, int pid, string ports);

    [LoggerMessage(3, LogLevel.Information, "Generation {GenerationId} is ready after {ReadyMs:0} ms.")]
    public static partial void Ready(ILogger logger, long generationId, double readyMs);

    [LoggerMessage(4, LogLevel.Information,
        "Handoff in namespace '{Namespace}': generation {PreviousIds} -> {GenerationId}, {PreviousPorts} -> {Ports}; rule transaction {TransactionMs:0.0} ms, launch to serving {LaunchToServingMs:0} ms.")]
    public static partial void TookOver(ILogger logger, string @namespace, string previousIds, long generationId, string previousPorts, string ports, double transactionMs, double launchToServingMs);

    [LoggerMessage(5, LogLevel.Warning, "Generation {GenerationId} steps aside: {Reason}")]
    public static partial void Superseded(ILogger logger, long generationId, string reason);

    [LoggerMessage(6, LogLevel.Critical, "Switchover: this generation did not take over and exits; the previous generation keeps serving. {Reason}")]
    public static partial void StartFailed(ILogger logger, string reason, Exception exception);

    [LoggerMessage(7, LogLevel.Information,
        "Generation {GenerationId} drains: listeners stay open until accept queues and half-open flows are gone; idle connections: {Policy} (keep-alive timeout {KeepAliveSeconds:0} s, drain bound {BoundSeconds:0} s); {Connections} connection(s) open.")]
    public static partial void DrainStarted(ILogger logger, long generationId, IdleConnectionPolicy policy, double keepAliveSeconds, double boundSeconds, int connections);

    [LoggerMessage(8, LogLevel.Information,
        "Generation {GenerationId} drained in {ElapsedMs:0} ms ({Outcome}); {Connections} connection(s) still open ({Waiting} with a client still to come back, {PastKeepAlive} idle past the keep-alive timeout, {Http2} HTTP/2) of {OpenAtStart} at the start; stopping Kestrel.")]
    public static partial void DrainFinished(ILogger logger, long generationId, double elapsedMs, string outcome, int connections, int waiting, int pastKeepAlive, int http2, int openAtStart);

    [LoggerMessage(9, LogLevel.Information, "Generation {GenerationId} left namespace '{Namespace}'{Last}.")]
    public static partial void Left(ILogger logger, long generationId, string @namespace, string last);

    [LoggerMessage(10, LogLevel.Debug, "Applied ruleset:\n{Ruleset}")]
    public static partial void Ruleset(ILogger logger, string ruleset);

    [LoggerMessage(11, LogLevel.Warning, "Removed {Count} stale generation(s) whose process is gone: {Generations}")]
    public static partial void StaleRemoved(ILogger logger, int count, string generations);

    [LoggerMessage(12, LogLevel.Warning, "Could not read conntrack while draining; relying on the accept queues only: {Reason}")]
    public static partial void ConntrackUnavailable(ILogger logger, string reason);

    [LoggerMessage(13, LogLevel.Error, "Generation {GenerationId} could not remove itself from the namespace state: {Reason}")]
    public static partial void LeaveFailed(ILogger logger, long generationId, string reason, Exception exception);

    [LoggerMessage(15, LogLevel.Critical, "Switchover configuration is invalid; nothing was bound and nothing was changed. Fix these and start again:\n{Errors}")]
    public static partial void InvalidConfiguration(ILogger logger, string errors);

    [LoggerMessage(16, LogLevel.Information, "Generation {GenerationId} was stopped with no successor: the public ports no longer point at it; connections to them are refused until the next generation takes over.")]
    public static partial void SteppedDown(ILogger logger, long generationId);

    [LoggerMessage(14, LogLevel.Debug, "Not ready yet: {Reason}")]
    public static partial void NotReady(ILogger logger, string reason);

    [LoggerMessage(17, LogLevel.Information, "Endpoint {Endpoint} is not a TCP address (a Unix socket): bound as configured, not handed over.")]
    public static partial void EndpointLeftAlone(ILogger logger, string endpoint);

    [LoggerMessage(18, LogLevel.Warning, "Could not notify systemd ({Message}): {Reason}. Check NOTIFY_SOCKET and the unit's NotifyAccess=all.")]
    public static partial void SystemdNotifyFailed(ILogger logger, string message, string reason);

    [LoggerMessage(19, LogLevel.Warning, "Could not record this generation's outcome for switchover deploy: {Reason}")]
    public static partial void OutcomeNotWritten(ILogger logger, string reason);

    [LoggerMessage(20, LogLevel.Information, "SIGHUP ignored: under systemd a reload is the next generation, started by ExecReload=switchover deploy.")]
    public static partial void HangupIgnored(ILogger logger);

    [LoggerMessage(21, LogLevel.Information, "Certificate {Path} changed on disk: new TLS handshakes get {NewThumbprint} (was {OldThumbprint}); open connections keep theirs.")]
    public static partial void CertificateReloaded(ILogger logger, string path, string oldThumbprint, string newThumbprint);

    [LoggerMessage(22, LogLevel.Warning, "Certificate {Path} changed on disk but does not load ({Reason}); the previous one is served until it does.")]
    public static partial void CertificateNotReloaded(ILogger logger, string path, string reason);

    [LoggerMessage(23, LogLevel.Information,
        "Launch waterfall of generation {GenerationId}, ms after the process started: host built {HostBuiltMs:0}, Kestrel bound {BoundMs:0}, checks {CheckedMs:0}, registered {RegisteredMs:0}, ready {ReadyMs:0}, took over {ServingMs:0} (rule transaction {TransactionMs:0.0}, state written and previous signalled within).")]
    public static partial void Waterfall(ILogger logger, long generationId, double hostBuiltMs, double boundMs, double checkedMs, double registeredMs, double readyMs, double transactionMs, double servingMs);

    // 40-49: the drain's idle-connection policy (issue 9).
    [LoggerMessage(40, LogLevel.Information,
        "Generation {GenerationId} waits for its clients: {Busy} connection(s) with a request in progress, {Idle} idle (longest {LongestIdleSeconds:0.0} s); each closes after its next request (answered with Connection: close) or when its client closes it, at the latest after the keep-alive timeout of {KeepAliveSeconds:0} s (drain bound {BoundSeconds:0} s).")]
    public static partial void DrainWaitsForClients(ILogger logger, long generationId, int busy, int idle, double longestIdleSeconds, double keepAliveSeconds, double boundSeconds);

    [LoggerMessage(41, LogLevel.Information,
        "The host's ShutdownTimeout was raised from {FromSeconds:0} s to {ToSeconds:0} s: a superseded generation drains for up to {BoundSeconds:0} s (Switchover:Drain:MaxDuration, or the keep-alive timeout plus 10 s) inside the host's shutdown, and Kestrel needs time to stop after it. For shorter drains set Switchover:Drain:MaxDuration, or Switchover:Drain:IdleConnections=CloseAfterQuiet.")]
    public static partial void ShutdownTimeoutRaised(ILogger logger, double fromSeconds, double toSeconds, double boundSeconds);

    [LoggerMessage(42, LogLevel.Warning, "{Warning}")]
    public static partial void DrainBoundShort(ILogger logger, string warning);

    // 60-69: the rollback window and signals to superseded generations.
    [LoggerMessage(60, LogLevel.Warning,
        "Could not tell generation {GenerationId} (pid {Pid}) that it was superseded (attempt {Attempt}); the takeover stands, that generation keeps serving the connections it has until it hears it; retrying in {RetrySeconds:0} s. {Error}")]
    public static partial void SignalFailed(ILogger logger, long generationId, int pid, int attempt, double retrySeconds, string error);

    [LoggerMessage(61, LogLevel.Information, "Generation {GenerationId} was superseded by generation {SuccessorId}: it drains, and watches it for its rollback window of {WindowMs:0} ms.")]
    public static partial void WatchingSuccessor(ILogger logger, long generationId, long successorId, double windowMs);

    [LoggerMessage(62, LogLevel.Warning,
        "Rollback in namespace '{Namespace}': generation {FromId} {Reason}; generation {GenerationId} holds the public ports again and stops draining ({Count} rollback(s) by this process).")]
    public static partial void RolledBack(ILogger logger, string @namespace, long fromId, string reason, long generationId, long count);

    [LoggerMessage(63, LogLevel.Information, "Generation {GenerationId}'s rollback window is over: it can no longer take the ports back, and stops once drained.")]
    public static partial void RollbackWindowEnded(ILogger logger, long generationId);

    [LoggerMessage(64, LogLevel.Warning, "Generation {SuccessorId} failed the health probe on its private ports ({Failures} in a row): {Reason}")]
    public static partial void SuccessorUnhealthy(ILogger logger, long successorId, int failures, string reason);

    [LoggerMessage(65, LogLevel.Warning,
        "Generation {SuccessorId} died after generation {GenerationId}'s rollback window: its rule and guard were removed ({Outcome}).")]
    public static partial void RepairedAfterWindow(ILogger logger, long successorId, long generationId, string outcome);

    [LoggerMessage(66, LogLevel.Error, "Generation {GenerationId} could not take the ports back: {Reason}")]
    public static partial void RollbackFailed(ILogger logger, long generationId, string reason, Exception? exception);

    [LoggerMessage(68, LogLevel.Warning,
        "Generation {SuccessorId} died in the middle of taking over from generation {GenerationId}, before it was told: the namespace was repaired ({Outcome}).")]
    public static partial void RepairedDeadSuccessor(ILogger logger, long successorId, long generationId, string outcome);

    [LoggerMessage(67, LogLevel.Information, "Generation {GenerationId} (pid {Pid}) heard that it was superseded, at attempt {Attempt}.")]
    public static partial void SignalDelivered(ILogger logger, long generationId, int pid, int attempt);
}
