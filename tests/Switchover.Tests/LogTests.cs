using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Switchover.Hosting;

namespace Switchover.Tests;

/// <summary>
/// Each of Switchover's log messages as a logging provider sees it: level, event id and name, the formatted text
/// (what the console, the journal and <c>switchover deploy</c> show, and what the lab's tests wait for), and the
/// structured properties with their types and <c>{OriginalFormat}</c> (what a structured logger stores).
/// </summary>
public sealed class LogTests
{
    private static readonly InvalidOperationException Failure = new("the kernel said no");

    // Every message with arguments that show the format specifiers' rounding; run under a culture whose decimal
    // separator is a comma, which the text must not take.
    private static readonly Dictionary<string, Expected> Cases = new()
    {
        [nameof(Log.Disabled)] = new(l => Log.Disabled(l), LogLevel.Information, 1,
            "Switchover is disabled (Switchover:Mode=Disabled); the configured endpoints are bound directly.",
            "Switchover is disabled (Switchover:Mode=Disabled); the configured endpoints are bound directly."),
        [nameof(Log.Registered)] = new(l => Log.Registered(l, 7, "shop", 4242, "8080->40001"), LogLevel.Information, 2,
            "Generation {GenerationId} of namespace '{Namespace}' registered (pid {Pid}); private ports {Ports}; waiting until it is ready.",
            "Generation 7 of namespace 'shop' registered (pid 4242); private ports 8080->40001; waiting until it is ready.",
            ("GenerationId", 7L), ("Namespace", "shop"), ("Pid", 4242), ("Ports", "8080->40001")),
        [nameof(Log.Ready)] = new(l => Log.Ready(l, 7, 632.5001), LogLevel.Information, 3,
            "Generation {GenerationId} is ready after {ReadyMs:0} ms.",
            "Generation 7 is ready after 633 ms.",
            ("GenerationId", 7L), ("ReadyMs", 632.5001)),
        [nameof(Log.TookOver)] = new(l => Log.TookOver(l, "shop", "5, 6", 7, "8080->40000", "8080->40001", 0.56, 657.6), LogLevel.Information, 4,
            "Handoff in namespace '{Namespace}': generation {PreviousIds} -> {GenerationId}, {PreviousPorts} -> {Ports}; rule transaction {TransactionMs:0.0} ms, launch to serving {LaunchToServingMs:0} ms.",
            "Handoff in namespace 'shop': generation 5, 6 -> 7, 8080->40000 -> 8080->40001; rule transaction 0.6 ms, launch to serving 658 ms.",
            // "Namespace" as the template and the other messages name it ([LoggerMessage] named this one "@namespace",
            // after the parameter, in the struct it generates for more than six arguments).
            ("Namespace", "shop"), ("PreviousIds", "5, 6"), ("GenerationId", 7L), ("PreviousPorts", "8080->40000"), ("Ports", "8080->40001"),
            ("TransactionMs", 0.56), ("LaunchToServingMs", 657.6)),
        [nameof(Log.Superseded)] = new(l => Log.Superseded(l, 7, "generation 8 took over"), LogLevel.Warning, 5,
            "Generation {GenerationId} steps aside: {Reason}",
            "Generation 7 steps aside: generation 8 took over",
            ("GenerationId", 7L), ("Reason", "generation 8 took over")),
        [nameof(Log.StartFailed)] = new(l => Log.StartFailed(l, "the port is taken", Failure), LogLevel.Critical, 6,
            "Switchover: this generation did not take over and exits; the previous generation keeps serving. {Reason}",
            "Switchover: this generation did not take over and exits; the previous generation keeps serving. the port is taken",
            ("Reason", "the port is taken")) { Exception = Failure },
        [nameof(Log.DrainStarted)] = new(l => Log.DrainStarted(l, 7, IdleConnectionPolicy.WaitForClient, 130, 139.6, 3), LogLevel.Information, 7,
            "Generation {GenerationId} drains: listeners stay open until accept queues and half-open flows are gone; idle connections: {Policy} (keep-alive timeout {KeepAliveSeconds:0} s, drain bound {BoundSeconds:0} s); {Connections} connection(s) open.",
            "Generation 7 drains: listeners stay open until accept queues and half-open flows are gone; idle connections: WaitForClient (keep-alive timeout 130 s, drain bound 140 s); 3 connection(s) open.",
            ("GenerationId", 7L), ("Policy", IdleConnectionPolicy.WaitForClient), ("KeepAliveSeconds", 130.0), ("BoundSeconds", 139.6), ("Connections", 3)),
        [nameof(Log.DrainFinished)] = new(l => Log.DrainFinished(l, 7, 1049.4, "quiet", 4, 1, 2, 1, 10), LogLevel.Information, 8,
            "Generation {GenerationId} drained in {ElapsedMs:0} ms ({Outcome}); {Connections} connection(s) still open ({Waiting} with a client still to come back, {PastKeepAlive} idle past the keep-alive timeout, {Http2} HTTP/2) of {OpenAtStart} at the start; stopping Kestrel.",
            "Generation 7 drained in 1049 ms (quiet); 4 connection(s) still open (1 with a client still to come back, 2 idle past the keep-alive timeout, 1 HTTP/2) of 10 at the start; stopping Kestrel.",
            ("GenerationId", 7L), ("ElapsedMs", 1049.4), ("Outcome", "quiet"), ("Connections", 4), ("Waiting", 1), ("PastKeepAlive", 2), ("Http2", 1), ("OpenAtStart", 10)),
        [nameof(Log.Left)] = new(l => Log.Left(l, 7, "shop", "; it was the last"), LogLevel.Information, 9,
            "Generation {GenerationId} left namespace '{Namespace}'{Last}.",
            "Generation 7 left namespace 'shop'; it was the last.",
            ("GenerationId", 7L), ("Namespace", "shop"), ("Last", "; it was the last")),
        [nameof(Log.Ruleset)] = new(l => Log.Ruleset(l, "table inet switchover_shop {\n}"), LogLevel.Debug, 10,
            "Applied ruleset:\n{Ruleset}",
            "Applied ruleset:\ntable inet switchover_shop {\n}",
            ("Ruleset", "table inet switchover_shop {\n}")),
        [nameof(Log.StaleRemoved)] = new(l => Log.StaleRemoved(l, 2, "5 (pid 100), 6 (pid 101)"), LogLevel.Warning, 11,
            "Removed {Count} stale generation(s) whose process is gone: {Generations}",
            "Removed 2 stale generation(s) whose process is gone: 5 (pid 100), 6 (pid 101)",
            ("Count", 2), ("Generations", "5 (pid 100), 6 (pid 101)")),
        [nameof(Log.ConntrackUnavailable)] = new(l => Log.ConntrackUnavailable(l, "EPERM"), LogLevel.Warning, 12,
            "Could not read conntrack while draining; relying on the accept queues only: {Reason}",
            "Could not read conntrack while draining; relying on the accept queues only: EPERM",
            ("Reason", "EPERM")),
        [nameof(Log.LeaveFailed)] = new(l => Log.LeaveFailed(l, 7, "the state is locked", Failure), LogLevel.Error, 13,
            "Generation {GenerationId} could not remove itself from the namespace state: {Reason}",
            "Generation 7 could not remove itself from the namespace state: the state is locked",
            ("GenerationId", 7L), ("Reason", "the state is locked")) { Exception = Failure },
        [nameof(Log.NotReady)] = new(l => Log.NotReady(l, "503 from /healthz"), LogLevel.Debug, 14,
            "Not ready yet: {Reason}",
            "Not ready yet: 503 from /healthz",
            ("Reason", "503 from /healthz")),
        [nameof(Log.InvalidConfiguration)] = new(l => Log.InvalidConfiguration(l, "- Switchover:Namespace: bad"), LogLevel.Critical, 15,
            "Switchover configuration is invalid; nothing was bound and nothing was changed. Fix these and start again:\n{Errors}",
            "Switchover configuration is invalid; nothing was bound and nothing was changed. Fix these and start again:\n- Switchover:Namespace: bad",
            ("Errors", "- Switchover:Namespace: bad")),
        [nameof(Log.SteppedDown)] = new(l => Log.SteppedDown(l, 7), LogLevel.Information, 16,
            "Generation {GenerationId} was stopped with no successor: the public ports no longer point at it; connections to them are refused until the next generation takes over.",
            "Generation 7 was stopped with no successor: the public ports no longer point at it; connections to them are refused until the next generation takes over.",
            ("GenerationId", 7L)),
        [nameof(Log.EndpointLeftAlone)] = new(l => Log.EndpointLeftAlone(l, "/run/app.sock"), LogLevel.Information, 17,
            "Endpoint {Endpoint} is not a TCP address (a Unix socket): bound as configured, not handed over.",
            "Endpoint /run/app.sock is not a TCP address (a Unix socket): bound as configured, not handed over.",
            ("Endpoint", "/run/app.sock")),
        [nameof(Log.SystemdNotifyFailed)] = new(l => Log.SystemdNotifyFailed(l, "READY=1", "ECONNREFUSED"), LogLevel.Warning, 18,
            "Could not notify systemd ({Message}): {Reason}. Check NOTIFY_SOCKET and the unit's NotifyAccess=all.",
            "Could not notify systemd (READY=1): ECONNREFUSED. Check NOTIFY_SOCKET and the unit's NotifyAccess=all.",
            ("Message", "READY=1"), ("Reason", "ECONNREFUSED")),
        [nameof(Log.OutcomeNotWritten)] = new(l => Log.OutcomeNotWritten(l, "disk full"), LogLevel.Warning, 19,
            "Could not record this generation's outcome for switchover deploy: {Reason}",
            "Could not record this generation's outcome for switchover deploy: disk full",
            ("Reason", "disk full")),
        [nameof(Log.HangupIgnored)] = new(l => Log.HangupIgnored(l), LogLevel.Information, 20,
            "SIGHUP ignored: under systemd a reload is the next generation, started by ExecReload=switchover deploy.",
            "SIGHUP ignored: under systemd a reload is the next generation, started by ExecReload=switchover deploy."),
        [nameof(Log.CertificateReloaded)] = new(l => Log.CertificateReloaded(l, "/etc/tls/cert.pem", "AAAA", "BBBB"), LogLevel.Information, 21,
            "Certificate {Path} changed on disk: new TLS handshakes get {NewThumbprint} (was {OldThumbprint}); open connections keep theirs.",
            "Certificate /etc/tls/cert.pem changed on disk: new TLS handshakes get BBBB (was AAAA); open connections keep theirs.",
            ("Path", "/etc/tls/cert.pem"), ("OldThumbprint", "AAAA"), ("NewThumbprint", "BBBB")),
        [nameof(Log.CertificateNotReloaded)] = new(l => Log.CertificateNotReloaded(l, "/etc/tls/cert.pem", "no key"), LogLevel.Warning, 22,
            "Certificate {Path} changed on disk but does not load ({Reason}); the previous one is served until it does.",
            "Certificate /etc/tls/cert.pem changed on disk but does not load (no key); the previous one is served until it does.",
            ("Path", "/etc/tls/cert.pem"), ("Reason", "no key")),
        [nameof(Log.Waterfall)] = new(l => Log.Waterfall(l, 7, 285.4, 401.5, 423.2, 508.7, 633.1, 0.55, 658.9), LogLevel.Information, 23,
            "Launch waterfall of generation {GenerationId}, ms after the process started: host built {HostBuiltMs:0}, Kestrel bound {BoundMs:0}, checks {CheckedMs:0}, registered {RegisteredMs:0}, ready {ReadyMs:0}, took over {ServingMs:0} (rule transaction {TransactionMs:0.0}, state written and previous signalled within).",
            "Launch waterfall of generation 7, ms after the process started: host built 285, Kestrel bound 402, checks 423, registered 509, ready 633, took over 659 (rule transaction 0.6, state written and previous signalled within).",
            ("GenerationId", 7L), ("HostBuiltMs", 285.4), ("BoundMs", 401.5), ("CheckedMs", 423.2), ("RegisteredMs", 508.7), ("ReadyMs", 633.1),
            ("TransactionMs", 0.55), ("ServingMs", 658.9)),
        [nameof(Log.DrainWaitsForClients)] = new(l => Log.DrainWaitsForClients(l, 7, 2, 5, 12.34, 130, 140), LogLevel.Information, 40,
            "Generation {GenerationId} waits for its clients: {Busy} connection(s) with a request in progress, {Idle} idle (longest {LongestIdleSeconds:0.0} s); each closes after its next request (answered with Connection: close) or when its client closes it, at the latest after the keep-alive timeout of {KeepAliveSeconds:0} s (drain bound {BoundSeconds:0} s).",
            "Generation 7 waits for its clients: 2 connection(s) with a request in progress, 5 idle (longest 12.3 s); each closes after its next request (answered with Connection: close) or when its client closes it, at the latest after the keep-alive timeout of 130 s (drain bound 140 s).",
            ("GenerationId", 7L), ("Busy", 2), ("Idle", 5), ("LongestIdleSeconds", 12.34), ("KeepAliveSeconds", 130.0), ("BoundSeconds", 140.0)),
        [nameof(Log.ShutdownTimeoutRaised)] = new(l => Log.ShutdownTimeoutRaised(l, 30, 155, 140), LogLevel.Information, 41,
            "The host's ShutdownTimeout was raised from {FromSeconds:0} s to {ToSeconds:0} s: a superseded generation drains for up to {BoundSeconds:0} s (Switchover:Drain:MaxDuration, or the keep-alive timeout plus 10 s) inside the host's shutdown, and Kestrel needs time to stop after it. For shorter drains set Switchover:Drain:MaxDuration, or Switchover:Drain:IdleConnections=CloseAfterQuiet.",
            "The host's ShutdownTimeout was raised from 30 s to 155 s: a superseded generation drains for up to 140 s (Switchover:Drain:MaxDuration, or the keep-alive timeout plus 10 s) inside the host's shutdown, and Kestrel needs time to stop after it. For shorter drains set Switchover:Drain:MaxDuration, or Switchover:Drain:IdleConnections=CloseAfterQuiet.",
            ("FromSeconds", 30.0), ("ToSeconds", 155.0), ("BoundSeconds", 140.0)),
        [nameof(Log.DrainBoundShort)] = new(l => Log.DrainBoundShort(l, "the drain bound {is} short"), LogLevel.Warning, 42,
            "{Warning}",
            "the drain bound {is} short",
            ("Warning", "the drain bound {is} short")),
        [nameof(Log.SignalFailed)] = new(l => Log.SignalFailed(l, 6, 4242, 2, 0.5, "ESRCH"), LogLevel.Warning, 60,
            "Could not tell generation {GenerationId} (pid {Pid}) that it was superseded (attempt {Attempt}); the takeover stands, that generation keeps serving the connections it has until it hears it; retrying in {RetrySeconds:0} s. {Error}",
            "Could not tell generation 6 (pid 4242) that it was superseded (attempt 2); the takeover stands, that generation keeps serving the connections it has until it hears it; retrying in 1 s. ESRCH",
            ("GenerationId", 6L), ("Pid", 4242), ("Attempt", 2), ("RetrySeconds", 0.5), ("Error", "ESRCH")),
        [nameof(Log.WatchingSuccessor)] = new(l => Log.WatchingSuccessor(l, 6, 7, 30_000), LogLevel.Information, 61,
            "Generation {GenerationId} was superseded by generation {SuccessorId}: it drains, and watches it for its rollback window of {WindowMs:0} ms.",
            "Generation 6 was superseded by generation 7: it drains, and watches it for its rollback window of 30000 ms.",
            ("GenerationId", 6L), ("SuccessorId", 7L), ("WindowMs", 30_000.0)),
        [nameof(Log.RolledBack)] = new(l => Log.RolledBack(l, "shop", 7, "died", 6, 1), LogLevel.Warning, 62,
            "Rollback in namespace '{Namespace}': generation {FromId} {Reason}; generation {GenerationId} holds the public ports again and stops draining ({Count} rollback(s) by this process).",
            "Rollback in namespace 'shop': generation 7 died; generation 6 holds the public ports again and stops draining (1 rollback(s) by this process).",
            ("Namespace", "shop"), ("FromId", 7L), ("Reason", "died"), ("GenerationId", 6L), ("Count", 1L)),
        [nameof(Log.RollbackWindowEnded)] = new(l => Log.RollbackWindowEnded(l, 6), LogLevel.Information, 63,
            "Generation {GenerationId}'s rollback window is over: it can no longer take the ports back, and stops once drained.",
            "Generation 6's rollback window is over: it can no longer take the ports back, and stops once drained.",
            ("GenerationId", 6L)),
        [nameof(Log.SuccessorUnhealthy)] = new(l => Log.SuccessorUnhealthy(l, 7, 3, "timed out"), LogLevel.Warning, 64,
            "Generation {SuccessorId} failed the health probe on its private ports ({Failures} in a row): {Reason}",
            "Generation 7 failed the health probe on its private ports (3 in a row): timed out",
            ("SuccessorId", 7L), ("Failures", 3), ("Reason", "timed out")),
        [nameof(Log.RepairedAfterWindow)] = new(l => Log.RepairedAfterWindow(l, 7, 6, "removed"), LogLevel.Warning, 65,
            "Generation {SuccessorId} died after generation {GenerationId}'s rollback window: its rule and guard were removed ({Outcome}).",
            "Generation 7 died after generation 6's rollback window: its rule and guard were removed (removed).",
            ("SuccessorId", 7L), ("GenerationId", 6L), ("Outcome", "removed")),
        [nameof(Log.RollbackFailed)] = new(l => Log.RollbackFailed(l, 6, "the table is gone", Failure), LogLevel.Error, 66,
            "Generation {GenerationId} could not take the ports back: {Reason}",
            "Generation 6 could not take the ports back: the table is gone",
            ("GenerationId", 6L), ("Reason", "the table is gone")) { Exception = Failure },
        [nameof(Log.SignalDelivered)] = new(l => Log.SignalDelivered(l, 6, 4242, 3), LogLevel.Information, 67,
            "Generation {GenerationId} (pid {Pid}) heard that it was superseded, at attempt {Attempt}.",
            "Generation 6 (pid 4242) heard that it was superseded, at attempt 3.",
            ("GenerationId", 6L), ("Pid", 4242), ("Attempt", 3)),
        [nameof(Log.RepairedDeadSuccessor)] = new(l => Log.RepairedDeadSuccessor(l, 7, 6, "repaired"), LogLevel.Warning, 68,
            "Generation {SuccessorId} died in the middle of taking over from generation {GenerationId}, before it was told: the namespace was repaired ({Outcome}).",
            "Generation 7 died in the middle of taking over from generation 6, before it was told: the namespace was repaired (repaired).",
            ("SuccessorId", 7L), ("GenerationId", 6L), ("Outcome", "repaired")),
    };

    public static TheoryData<string> Messages => [.. Cases.Keys];

    [Fact]
    public void Every_message_has_a_case_here() =>
        Assert.Equal(
            typeof(Log).GetMethods(BindingFlags.Public | BindingFlags.Static).Select(m => m.Name).Order(),
            Cases.Keys.Order());

    [Fact]
    public void Event_ids_are_unique() =>
        Assert.Equal(Cases.Count, Cases.Values.Select(c => c.Id).Distinct().Count());

    [Theory]
    [MemberData(nameof(Messages))]
    public void A_message_reads_as_before_with_its_level_event_and_structured_properties(string name)
    {
        var expected = Cases[name];
        var logger = new FakeLogger();
        var typed = new StateRecorder();
        var culture = CultureInfo.CurrentCulture;
        try
        {
            CultureInfo.CurrentCulture = CommaCulture();
            expected.Write(logger);
            expected.Write(typed);
        }
        finally
        {
            CultureInfo.CurrentCulture = culture;
        }

        var record = Assert.Single(logger.Collector.GetSnapshot());
        Assert.Equal(expected.Level, record.Level);
        Assert.Equal(new EventId(expected.Id, name), record.Id);
        Assert.Equal(name, record.Id.Name);
        Assert.Equal(expected.Text, record.Message);
        Assert.Same(expected.Exception, record.Exception);

        // Compared with their types: a long stays a long for a structured logger. The order is the template's or the
        // method's; a structured logger reads the properties by name.
        var properties = expected.Properties.Append((Key: "{OriginalFormat}", Value: (object?)expected.Template))
            .Select(p => new KeyValuePair<string, object?>(p.Key, p.Value))
            .OrderBy(p => p.Key, StringComparer.Ordinal);
        var state = Assert.Single(typed.States);
        Assert.Equal(properties, state.OrderBy(p => p.Key, StringComparer.Ordinal));
        Assert.Equal(expected.Template, state[^1].Value);
    }

    [Theory]
    [MemberData(nameof(Messages))]
    public void A_message_of_a_disabled_level_never_reaches_the_logger(string name)
    {
        var expected = Cases[name];
        var logger = new FakeLogger();
        logger.ControlLevel(expected.Level, enabled: false);

        expected.Write(logger);

        // The fake collects records of disabled levels too (CollectRecordsForDisabledLogLevels): none means the
        // message returned at its IsEnabled check, before any argument was boxed or formatted.
        Assert.Empty(logger.Collector.GetSnapshot());
    }

    private static CultureInfo CommaCulture()
    {
        var culture = (CultureInfo)CultureInfo.InvariantCulture.Clone();
        culture.NumberFormat.NumberDecimalSeparator = ",";
        culture.NumberFormat.NumberGroupSeparator = ".";
        return culture;
    }

    /// <summary>Keeps each state's properties as the logger got them (FakeLogger keeps them as strings).</summary>
    private sealed class StateRecorder : ILogger
    {
        public List<IReadOnlyList<KeyValuePair<string, object?>>> States { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            States.Add(state is IReadOnlyList<KeyValuePair<string, object?>> properties ? [.. properties] : []);
    }

    private sealed record Expected(Action<ILogger> Write, LogLevel Level, int Id, string Template, string Text, params (string Key, object? Value)[] Properties)
    {
        public Exception? Exception { get; init; }
    }
}
