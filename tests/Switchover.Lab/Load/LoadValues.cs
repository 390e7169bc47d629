namespace Switchover.Lab;

/// <summary>How one request ended.</summary>
public enum RequestOutcome
{
    /// <summary>A complete 2xx response whose body the validator (if any) accepted.</summary>
    Ok,

    /// <summary>The connection attempt was refused (RST in answer to SYN: nothing listens).</summary>
    ConnectionRefused,

    /// <summary>The connection was reset (or found broken) while the request was sent or its response awaited.</summary>
    ConnectionReset,

    /// <summary>The connection attempt or the response took longer than the configured timeout.</summary>
    Timeout,

    /// <summary>The server closed the connection before a complete response arrived.</summary>
    EndOfStreamBeforeResponse,

    /// <summary>A complete response with a status code outside 200-299.</summary>
    BadStatus,

    /// <summary>A complete 2xx response whose body the validator rejected.</summary>
    BadBody,

    /// <summary>Anything else: a malformed response, an unexpected socket error. The detail says what.</summary>
    OtherError,

    /// <summary>
    /// With <see cref="LoadOptions.ProbeBeforeReuse"/> off only: the request was sent on a kept-alive connection reused
    /// from an earlier request, and the connection ended (FIN or RST) before any byte of the response: the server had
    /// closed it while it was idle. Python's http.client reports this as <c>RemoteDisconnected</c>.
    /// </summary>
    ReusedConnectionClosed,
}

/// <summary>Why a run stopped.</summary>
public enum LoadStopReason
{
    MaxDuration,
    MaxRequests,
    Stopped,
    Cancelled,
}

/// <summary>One failed request.</summary>
/// <param name="Elapsed">Time since the run started.</param>
public sealed record LoadFailure(DateTime TimestampUtc, TimeSpan Elapsed, string Target, RequestOutcome Kind, string Detail)
{
    public override string ToString() => $"{TimestampUtc:HH:mm:ss.fff} +{Elapsed.TotalSeconds:0.000}s {Target} {Kind}: {Detail}";
}

/// <summary>How often a response body was seen, and when first and last.</summary>
public sealed record BodyTally(long Count, DateTime FirstSeenUtc, DateTime LastSeenUtc);

/// <summary>One of the newest OK responses.</summary>
public sealed record RecentResponse(DateTime TimestampUtc, string Target, string Body);

/// <summary>Requests completed in one second of the run, counted by the second in which they completed.</summary>
public sealed record TimelineSecond(int Second, long Ok, long Failed);

/// <summary>Latency of OK requests, from the start of the request (including the connect, when it needed one) to the end of the response.</summary>
public sealed record LatencySummary(long Count, TimeSpan Min, TimeSpan Mean, TimeSpan P50, TimeSpan P90, TimeSpan P99, TimeSpan P999, TimeSpan Max)
{
    public override string ToString() =>
        Count == 0
            ? "no OK requests"
            : $"p50 {Ms(P50)} p90 {Ms(P90)} p99 {Ms(P99)} p99.9 {Ms(P999)} max {Ms(Max)} (mean {Ms(Mean)})";

    internal static LatencySummary From(LatencyHistogram histogram) => new(
        histogram.Count,
        Micros(histogram.Min),
        TimeSpan.FromMicroseconds(histogram.Mean),
        Micros(histogram.ValueAtPercentile(50)),
        Micros(histogram.ValueAtPercentile(90)),
        Micros(histogram.ValueAtPercentile(99)),
        Micros(histogram.ValueAtPercentile(99.9)),
        Micros(histogram.Max));

    private static TimeSpan Micros(long microseconds) => TimeSpan.FromMicroseconds(microseconds);

    private static string Ms(TimeSpan value) =>
        value.TotalMilliseconds.ToString(value.TotalMilliseconds < 10 ? "0.000" : "0.0", System.Globalization.CultureInfo.InvariantCulture) + " ms";
}
