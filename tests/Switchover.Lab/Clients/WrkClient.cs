using System.Globalization;
using System.Text.RegularExpressions;

namespace Switchover.Lab;

/// <summary>
/// wrk run inside a lab namespace (<c>ip netns exec</c>), for the integration tests: HTTP/1.1, over TLS for an
/// <c>https://</c> target (wrk does not verify the certificate and offers no ALPN, so Kestrel speaks HTTP/1.1).
/// </summary>
public static class WrkClient
{
    /// <summary>Starts wrk for a whole number of seconds; it stops by itself. Await its exit, then <see cref="WrkCount.Parse"/>.</summary>
    /// <param name="connectionClose">Send <c>Connection: close</c> with every request: a new connection (and handshake) per request.</param>
    public static LabProcess Start(NetworkNamespace client, Uri target, int connections, TimeSpan duration, bool connectionClose = false)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(target);
        List<string> arguments =
        [
            "-t", Math.Min(2, connections).ToString(CultureInfo.InvariantCulture),
            "-c", connections.ToString(CultureInfo.InvariantCulture),
            "-d", Math.Max(1, (int)Math.Ceiling(duration.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "s",

            // wrk's default of 2 s would count a slow response during a handoff as an error; our driver allows 10 s.
            "--timeout", "10s",
        ];
        if (connectionClose)
        {
            arguments.AddRange(["-H", "Connection: close"]);
        }

        arguments.Add(target.ToString());
        return client.StartProcess("wrk", arguments);
    }
}

/// <summary>What wrk counted: requests, its socket errors, and responses outside 2xx/3xx.</summary>
public sealed partial record WrkCount(long Requests, long ConnectErrors, long ReadErrors, long WriteErrors, long TimeoutErrors, long Non2xx3xx, string Output)
{
    /// <summary>Every request wrk counts as not OK.</summary>
    public long Failures => ConnectErrors + ReadErrors + WriteErrors + TimeoutErrors + Non2xx3xx;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"wrk: {Requests} requests; socket errors: connect {ConnectErrors}, read {ReadErrors}, write {WriteErrors}, timeout {TimeoutErrors}; non-2xx/3xx {Non2xx3xx}");

    /// <summary>Parses wrk's report. Throws <see cref="FormatException"/> when the totals line is missing.</summary>
    public static WrkCount Parse(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var totals = Totals().Match(output);
        if (!totals.Success)
        {
            throw new FormatException($"wrk printed no '<n> requests in <t>' line:\n{output}");
        }

        long connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0;
        if (SocketErrors().Match(output) is { Success: true } errors)
        {
            connect = long.Parse(errors.Groups["connect"].Value, CultureInfo.InvariantCulture);
            read = long.Parse(errors.Groups["read"].Value, CultureInfo.InvariantCulture);
            write = long.Parse(errors.Groups["write"].Value, CultureInfo.InvariantCulture);
            timeout = long.Parse(errors.Groups["timeout"].Value, CultureInfo.InvariantCulture);
        }

        if (Non2xx().Match(output) is { Success: true } bad)
        {
            non2xx = long.Parse(bad.Groups[1].Value, CultureInfo.InvariantCulture);
        }

        return new WrkCount(long.Parse(totals.Groups[1].Value, CultureInfo.InvariantCulture), connect, read, write, timeout, non2xx, output);
    }

    [GeneratedRegex(@"^\s*(\d+) requests in ", RegexOptions.Multiline)]
    private static partial Regex Totals();

    [GeneratedRegex(@"Socket errors: connect (?<connect>\d+), read (?<read>\d+), write (?<write>\d+), timeout (?<timeout>\d+)")]
    private static partial Regex SocketErrors();

    [GeneratedRegex(@"Non-2xx or 3xx responses: (\d+)")]
    private static partial Regex Non2xx();
}
