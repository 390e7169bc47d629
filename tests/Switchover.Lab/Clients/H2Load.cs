using System.Globalization;
using System.Text.RegularExpressions;

namespace Switchover.Lab;

/// <summary>How to run h2load (nghttp2-client) for one run.</summary>
public sealed record H2LoadOptions
{
    /// <summary>Concurrent clients (connections), h2load's <c>-c</c>. Default: 8.</summary>
    public int Connections { get; init; } = 8;

    /// <summary>Concurrent streams per connection, h2load's <c>-m</c>. Default: 16.</summary>
    public int StreamsPerConnection { get; init; } = 16;

    /// <summary>
    /// The main duration, h2load's <c>-D</c>. Timing-based, because h2load (1.52) neither retries nor reconnects after a
    /// GOAWAY: with <c>-n</c> every request not yet issued when the connection is told to go away would be counted as failed.
    /// </summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Per-request timeout, h2load's <c>-T</c> (it counts such requests as "timeout"). Default: 10 s.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>HTTP/1.1 instead of HTTP/2 (<c>--h1</c>). Default: false.</summary>
    public bool Http1 { get; init; }
}

/// <summary>
/// h2load run inside a lab namespace (<c>ip netns exec</c>): many connections times many concurrent streams, with its own
/// count of what failed. h2load never retries a request, so a stream it lost is a request a real client would have had
/// to retry. For <c>https://</c> targets it offers ALPN h2 (and http/1.1) and does not verify the certificate.
/// </summary>
public static class H2Load
{
    /// <summary>Starts h2load; it stops by itself after <see cref="H2LoadOptions.Duration"/>. Await its exit, then <see cref="H2LoadResult.Parse"/>.</summary>
    public static LabProcess Start(NetworkNamespace client, Uri target, H2LoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(options);
        List<string> arguments =
        [
            "-c", options.Connections.ToString(CultureInfo.InvariantCulture),
            "-m", options.StreamsPerConnection.ToString(CultureInfo.InvariantCulture),
            "-D", Seconds(options.Duration),
            "-T", Seconds(options.RequestTimeout),
        ];
        if (options.Http1)
        {
            arguments.Add("--h1");
        }

        if (target.HostNameType == UriHostNameType.IPv6)
        {
            // h2load 1.52 sends an IPv6 literal without its brackets (":authority: 2001:db8::1:8080"), which Kestrel
            // rightly resets as an invalid Host; say it the way RFC 3986 writes it.
            arguments.AddRange(["-H", $":authority: {target.Authority}"]);
        }

        arguments.Add(target.ToString());
        return client.StartProcess("h2load", arguments);
    }

    /// <summary>h2load's version line, or what it printed instead.</summary>
    public static async Task<string> VersionAsync(NetworkNamespace ns, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ns);
        var result = await ns.TryRunAsync("h2load", ["--version"], cancellationToken).ConfigureAwait(false);
        return (result.StandardOutput + result.StandardError).Trim().Split('\n')[0];
    }

    private static string Seconds(TimeSpan value) =>
        Math.Max(1, (int)Math.Ceiling(value.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "s";
}

/// <summary>h2load's own summary: "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout".</summary>
public sealed partial record H2LoadResult(
    long Total,
    long Started,
    long Done,
    long Succeeded,
    long Failed,
    long Errored,
    long TimedOut,
    string? ApplicationProtocol,
    string? TlsProtocol,
    string Output)
{
    /// <summary>
    /// Requests started and never done. h2load drops the streams of a connection that closes under them without counting
    /// them as failed (its final tally recomputes "failed" from the requests done), so this is the only trace of them. In a
    /// run whose connections all ended by GOAWAY before the duration did, it must be 0; otherwise it includes the requests
    /// still in flight when the duration ended.
    /// </summary>
    public long Abandoned => Started - Done;

    /// <summary>No request failed, errored, timed out or was abandoned.</summary>
    public bool Clean => Failed == 0 && Errored == 0 && TimedOut == 0 && Abandoned == 0;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"h2load: {Total} total, {Started} started, {Done} done, {Succeeded} succeeded, {Failed} failed, {Errored} errored, {TimedOut} timeout, {Abandoned} abandoned"
        + $" (protocol {ApplicationProtocol ?? "?"}{(TlsProtocol is null ? string.Empty : ", " + TlsProtocol)})");

    /// <summary>Adds up several runs (the protocol lines of the first one are kept).</summary>
    public static H2LoadResult Sum(IReadOnlyList<H2LoadResult> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        if (runs.Count == 0)
        {
            throw new ArgumentException("No h2load run to add up.", nameof(runs));
        }

        return new H2LoadResult(
            runs.Sum(r => r.Total), runs.Sum(r => r.Started), runs.Sum(r => r.Done), runs.Sum(r => r.Succeeded),
            runs.Sum(r => r.Failed), runs.Sum(r => r.Errored), runs.Sum(r => r.TimedOut),
            runs[0].ApplicationProtocol, runs[0].TlsProtocol, string.Join("\n", runs.Select(r => r.Output)));
    }

    /// <summary>Parses h2load's report. Throws <see cref="FormatException"/> when the requests line is missing.</summary>
    public static H2LoadResult Parse(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var match = RequestsLine().Match(output);
        if (!match.Success)
        {
            throw new FormatException($"h2load printed no 'requests: N total, ...' line:\n{output}");
        }

        long Group(string name) => long.Parse(match.Groups[name].Value, CultureInfo.InvariantCulture);
        var protocol = ApplicationProtocolLine().Match(output);
        var tls = TlsProtocolLine().Match(output);
        return new H2LoadResult(
            Group("total"), Group("started"), Group("done"), Group("succeeded"), Group("failed"), Group("errored"), Group("timeout"),
            protocol.Success ? protocol.Groups[1].Value : null,
            tls.Success ? tls.Groups[1].Value : null,
            output);
    }

    [GeneratedRegex(@"^requests: (?<total>\d+) total, (?<started>\d+) started, (?<done>\d+) done, (?<succeeded>\d+) succeeded, (?<failed>\d+) failed, (?<errored>\d+) errored, (?<timeout>\d+) timeout", RegexOptions.Multiline)]
    private static partial Regex RequestsLine();

    [GeneratedRegex(@"^Application protocol: (\S+)", RegexOptions.Multiline)]
    private static partial Regex ApplicationProtocolLine();

    [GeneratedRegex(@"^TLS Protocol: (\S+)", RegexOptions.Multiline)]
    private static partial Regex TlsProtocolLine();
}
