using System.Globalization;
using System.Net;
using Switchover.Lab;

namespace Switchover.Load.Clients;

/// <summary>wrk, run inside a lab namespace (<c>ip netns exec</c>), as a second opinion next to our own driver.</summary>
internal static class Wrk
{
    /// <summary>Starts wrk for a whole number of seconds; it stops by itself. Await its exit, then <see cref="WrkResult.Parse"/> its output.</summary>
    /// <param name="connectionClose">Send <c>Connection: close</c> with every request: a new connection per request.</param>
    public static LabProcess Start(NetworkNamespace client, IPEndPoint target, int connections, int seconds, bool connectionClose)
    {
        var threads = Math.Min(2, connections);
        List<string> arguments =
        [
            "-t", threads.ToString(CultureInfo.InvariantCulture),
            "-c", connections.ToString(CultureInfo.InvariantCulture),
            "-d", seconds.ToString(CultureInfo.InvariantCulture) + "s",

            // Our driver's request timeout; wrk's default of 2 s would count a slow response as an error.
            "--timeout", "10s",
            "--latency",
        ];
        if (connectionClose)
        {
            arguments.AddRange(["-H", "Connection: close"]);
        }

        arguments.Add($"http://{target}/");
        return client.StartProcess("wrk", arguments);
    }

    /// <summary>wrk's version line, or a note that it is missing.</summary>
    public static async Task<string> VersionAsync(NetworkNamespace ns, CancellationToken cancellationToken)
    {
        var result = await ns.TryRunAsync("wrk", ["-v"], cancellationToken);
        var text = (result.StandardOutput + result.StandardError).Trim();
        return text.Split('\n')[0];
    }
}
