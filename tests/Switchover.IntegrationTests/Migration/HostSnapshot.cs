using System.Text;
using Switchover.Lab;

namespace Switchover.IntegrationTests.Migration;

/// <summary>Everything a migration may change on a lab host, as text: compare one taken before with one taken after.</summary>
internal static class HostSnapshot
{
    private static readonly string[][] Commands =
    [
        ["ip", "-4", "rule"], ["ip", "-6", "rule"], ["ip", "-4", "route", "show", "table", "all"], ["ip", "-6", "route", "show", "table", "all"],
        ["ip", "addr"], ["nft", "list", "ruleset"],
        ["sysctl", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter",
            "net.ipv4.conf.eth0.accept_local", "net.ipv4.conf.all.accept_local"],
    ];

    public static async Task<string> TakeAsync(NetworkNamespace host, CancellationToken cancellationToken)
    {
        var sb = new StringBuilder();
        foreach (var command in Commands)
        {
            sb.Append("$ ").AppendJoin(' ', command).Append('\n');
            // IPv6 link-local addresses and their routes come and go with the kernel's autoconfiguration (DAD), not with us.
            var lines = (await host.RunAsync(command[0], command[1..], cancellationToken)).StandardOutput.Split('\n')
                .Where(l => !l.Contains("fe80:", StringComparison.Ordinal) && !l.Contains("scope link", StringComparison.Ordinal) || l.Contains("inet ", StringComparison.Ordinal));
            sb.AppendJoin('\n', lines);
        }

        // The FOU receive ports of GRE in UDP over kernel GRE: where the kernel has no FOU the command fails alike every time.
        sb.Append("\n$ ip fou show\n").Append((await host.TryRunAsync("ip", ["fou", "show"], cancellationToken)).StandardOutput);
        return sb.ToString();
    }
}
