using System.Globalization;
using System.Text.RegularExpressions;

namespace Switchover.Lab;

/// <summary>What wrk printed: requests, its own socket-error counts, non-2xx/3xx responses and latency percentiles.</summary>
public sealed partial record WrkResult(
    long Requests,
    TimeSpan Duration,
    long ConnectErrors,
    long ReadErrors,
    long WriteErrors,
    long TimeoutErrors,
    long Non2xx3xx,
    IReadOnlyDictionary<string, TimeSpan> LatencyPercentiles,
    string Output)
{
    public long SocketErrors => ConnectErrors + ReadErrors + WriteErrors + TimeoutErrors;

    /// <summary>Every request wrk counts as not OK: its socket errors and the responses outside 2xx/3xx.</summary>
    public long Failures => SocketErrors + Non2xx3xx;

    public double RequestsPerSecond => Duration > TimeSpan.Zero ? Requests / Duration.TotalSeconds : 0;

    public string ErrorsText => string.Create(CultureInfo.InvariantCulture,
        $"connect {ConnectErrors}, read {ReadErrors}, write {WriteErrors}, timeout {TimeoutErrors}; non-2xx/3xx {Non2xx3xx}");

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"wrk: {Requests} requests; socket errors: {ErrorsText}");

    /// <summary>Parses wrk's report (run with --latency). Throws <see cref="FormatException"/> when the totals line is missing.</summary>
    public static WrkResult Parse(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var totals = Totals().Match(output);
        if (!totals.Success)
        {
            throw new FormatException($"wrk printed no '<n> requests in <t>' line:\n{output}");
        }

        long connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0;
        if (SocketErrorsLine().Match(output) is { Success: true } errors)
        {
            connect = long.Parse(errors.Groups["connect"].Value, CultureInfo.InvariantCulture);
            read = long.Parse(errors.Groups["read"].Value, CultureInfo.InvariantCulture);
            write = long.Parse(errors.Groups["write"].Value, CultureInfo.InvariantCulture);
            timeout = long.Parse(errors.Groups["timeout"].Value, CultureInfo.InvariantCulture);
        }

        if (Non2xxLine().Match(output) is { Success: true } bad)
        {
            non2xx = long.Parse(bad.Groups[1].Value, CultureInfo.InvariantCulture);
        }

        var percentiles = new Dictionary<string, TimeSpan>(StringComparer.Ordinal);
        foreach (Match match in PercentileLine().Matches(output))
        {
            percentiles[match.Groups["p"].Value] = ParseDuration(match.Groups["v"].Value, match.Groups["u"].Value);
        }

        return new WrkResult(
            long.Parse(totals.Groups["n"].Value, CultureInfo.InvariantCulture),
            ParseDuration(totals.Groups["t"].Value, totals.Groups["u"].Value),
            connect, read, write, timeout, non2xx, percentiles, output);
    }

    private static TimeSpan ParseDuration(string value, string unit)
    {
        var number = double.Parse(value, CultureInfo.InvariantCulture);
        return unit switch
        {
            "us" => TimeSpan.FromMicroseconds(number),
            "ms" => TimeSpan.FromMilliseconds(number),
            "s" => TimeSpan.FromSeconds(number),
            "m" => TimeSpan.FromMinutes(number),
            "h" => TimeSpan.FromHours(number),
            _ => throw new FormatException($"Unknown wrk time unit '{unit}'."),
        };
    }

    [GeneratedRegex(@"^\s*(?<n>\d+) requests in (?<t>[\d.]+)(?<u>us|ms|s|m|h),", RegexOptions.Multiline)]
    private static partial Regex Totals();

    [GeneratedRegex(@"Socket errors: connect (?<connect>\d+), read (?<read>\d+), write (?<write>\d+), timeout (?<timeout>\d+)")]
    private static partial Regex SocketErrorsLine();

    [GeneratedRegex(@"Non-2xx or 3xx responses: (\d+)")]
    private static partial Regex Non2xxLine();

    [GeneratedRegex(@"^\s+(?<p>50|75|90|99)%\s+(?<v>[\d.]+)(?<u>us|ms|s|m|h)\s*$", RegexOptions.Multiline)]
    private static partial Regex PercentileLine();
}
