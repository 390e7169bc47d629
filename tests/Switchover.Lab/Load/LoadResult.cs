using System.Globalization;
using System.Text;

namespace Switchover.Lab;

/// <summary>What a load run did: every request is counted exactly once, as OK or as one kind of failure.</summary>
public sealed class LoadResult
{
    internal LoadResult(
        IReadOnlyList<string> targets,
        ConnectionMode mode,
        int concurrency,
        DateTime startedUtc,
        TimeSpan duration,
        LoadStopReason stopReason,
        IReadOnlyDictionary<RequestOutcome, long> countsByOutcome,
        IReadOnlyList<LoadFailure> failures,
        long failuresNotRecorded,
        IReadOnlyDictionary<string, BodyTally> bodies,
        long untalliedBodies,
        IReadOnlyList<RecentResponse> recentResponses,
        LatencySummary latency,
        IReadOnlyList<TimelineSecond> timeline,
        long connectionsOpened,
        long staleConnectionsDiscarded,
        long abandoned)
    {
        Targets = targets;
        Mode = mode;
        Concurrency = concurrency;
        StartedUtc = startedUtc;
        Duration = duration;
        StopReason = stopReason;
        CountsByOutcome = countsByOutcome;
        Failures = failures;
        FailuresNotRecorded = failuresNotRecorded;
        Bodies = bodies;
        UntalliedBodies = untalliedBodies;
        RecentResponses = recentResponses;
        Latency = latency;
        Timeline = timeline;
        ConnectionsOpened = connectionsOpened;
        StaleConnectionsDiscarded = staleConnectionsDiscarded;
        Abandoned = abandoned;
        foreach (var (outcome, count) in countsByOutcome)
        {
            TotalRequests += count;
            if (outcome != RequestOutcome.Ok)
            {
                FailureCount += count;
            }
        }

        OkCount = TotalRequests - FailureCount;
    }

    /// <summary>The targets, as "name (namespace -> endpoint)".</summary>
    public IReadOnlyList<string> Targets { get; }

    public ConnectionMode Mode { get; }

    /// <summary>Workers per target.</summary>
    public int Concurrency { get; }

    public DateTime StartedUtc { get; }

    /// <summary>From the start until the last worker finished.</summary>
    public TimeSpan Duration { get; }

    public LoadStopReason StopReason { get; }

    /// <summary>Requests that came to an outcome (abandoned ones not included).</summary>
    public long TotalRequests { get; }

    public long OkCount { get; }

    public long FailureCount { get; }

    /// <summary>Every <see cref="RequestOutcome"/>, including those with a count of 0.</summary>
    public IReadOnlyDictionary<RequestOutcome, long> CountsByOutcome { get; }

    /// <summary>Failed requests in the order they happened, up to <see cref="LoadOptions.MaxRecordedFailures"/>.</summary>
    public IReadOnlyList<LoadFailure> Failures { get; }

    /// <summary>Failures counted but not kept in <see cref="Failures"/>.</summary>
    public long FailuresNotRecorded { get; }

    /// <summary>Per distinct body of an OK response: how often, first and last seen.</summary>
    public IReadOnlyDictionary<string, BodyTally> Bodies { get; }

    /// <summary>OK responses not tallied in <see cref="Bodies"/> because 1000 other distinct bodies already were.</summary>
    public long UntalliedBodies { get; }

    /// <summary>The last (about 1000) OK responses, oldest first.</summary>
    public IReadOnlyList<RecentResponse> RecentResponses { get; }

    public LatencySummary Latency { get; }

    /// <summary>Completed requests per second of the run.</summary>
    public IReadOnlyList<TimelineSecond> Timeline { get; }

    public long ConnectionsOpened { get; }

    /// <summary>Idle keep-alive connections found closed by the server before reuse; replaced before sending, so no request failed.</summary>
    public long StaleConnectionsDiscarded { get; }

    /// <summary>Requests in flight when the run was aborted (cancelled), counted nowhere else.</summary>
    public long Abandoned { get; }

    public double RequestsPerSecond => Duration > TimeSpan.Zero ? TotalRequests / Duration.TotalSeconds : 0;

    /// <summary>The latency histogram behind <see cref="Latency"/>; null for results built without one.</summary>
    internal LatencyHistogram? Histogram { get; init; }

    /// <summary>
    /// The latency of the OK requests of several runs together, from their merged histograms: percentiles of the
    /// union, never an average of percentiles.
    /// </summary>
    public static LatencySummary CombineLatency(IEnumerable<LoadResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        var merged = new LatencyHistogram();
        foreach (var result in results)
        {
            merged.Add(result.Histogram ?? throw new ArgumentException("A result without a latency histogram cannot be combined.", nameof(results)));
        }

        return LatencySummary.From(merged);
    }

    public long Count(RequestOutcome outcome) => CountsByOutcome.TryGetValue(outcome, out var count) ? count : 0;

    /// <summary>One paragraph: what ran, how it ended, outcomes, latency, bodies, and the first failures.</summary>
    public string Summary
    {
        get
        {
            var c = CultureInfo.InvariantCulture;
            var text = new StringBuilder();
            text.Append(c, $"{Mode} load, {Concurrency} worker(s) on each of {string.Join(", ", Targets)}; ")
                .Append(c, $"ran {Duration.TotalSeconds:0.00} s, stopped by {StopReason}: ")
                .Append(c, $"{TotalRequests} requests ({RequestsPerSecond:0} /s), {OkCount} OK, {FailureCount} failed");
            if (FailureCount > 0)
            {
                text.Append(" [");
                text.AppendJoin(", ", CountsByOutcome.Where(p => p.Key != RequestOutcome.Ok && p.Value > 0).Select(p => $"{p.Key} {p.Value}"));
                text.Append(']');
            }

            text.Append(c, $"; {ConnectionsOpened} connections opened");
            if (StaleConnectionsDiscarded > 0)
            {
                text.Append(c, $", {StaleConnectionsDiscarded} stale ones discarded");
            }

            if (Abandoned > 0)
            {
                text.Append(c, $", {Abandoned} requests abandoned in flight");
            }

            text.Append(c, $"; latency {Latency}");
            if (Bodies.Count > 0)
            {
                text.Append("; bodies: ");
                text.AppendJoin(", ", Bodies.OrderByDescending(p => p.Value.Count).Take(5).Select(p => $"'{Shorten(p.Key)}' x{p.Value.Count}"));
                if (Bodies.Count > 5)
                {
                    text.Append(c, $" and {Bodies.Count - 5} more");
                }
            }

            if (Failures.Count > 0)
            {
                text.Append("; first failures: ");
                text.AppendJoin(" | ", Failures.Take(3));
            }

            return text.Append('.').ToString();
        }
    }

    public override string ToString() => Summary;

    private static string Shorten(string body)
    {
        var oneLine = body.ReplaceLineEndings(" ").Trim();
        return oneLine.Length <= 40 ? oneLine : string.Concat(oneLine.AsSpan(0, 40), "...");
    }
}
