using System.Globalization;

namespace Switchover.Lab;

/// <summary>
/// wrk run inside a lab namespace (<c>ip netns exec</c>), for the integration tests: HTTP/1.1, over TLS for an
/// <c>https://</c> target (wrk does not verify the certificate and offers no ALPN, so Kestrel speaks HTTP/1.1).
/// </summary>
public static class WrkClient
{
    /// <summary>Starts wrk for a whole number of seconds; it stops by itself. Await its exit, then <see cref="WrkResult.Parse"/>.</summary>
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
