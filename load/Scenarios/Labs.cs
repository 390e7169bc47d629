using Switchover.Lab;

namespace Switchover.Load.Scenarios;

/// <summary>Creates the two-host labs the scenarios run in, tuned for load.</summary>
internal static class Labs
{
    public static async Task<TwoHostLab> CreateAsync(CancellationToken cancellationToken)
    {
        var lab = await TwoHostLab.CreateAsync(cancellationToken);
        try
        {
            // Per network namespace, so these change nothing outside the lab. A client that opens thousands of connections
            // a second (or holds 10,000 idle ones) needs the whole ephemeral range, and may reuse a port whose earlier
            // connection it closed first (TIME_WAIT): both are client-side choices, the server is left at its defaults.
            await lab.Client.RunAsync("sysctl", ["-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"], cancellationToken);
            await lab.Client.RunAsync("sysctl", ["-q", "-w", "net.ipv4.tcp_tw_reuse=1"], cancellationToken);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }
}
