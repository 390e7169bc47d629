using System.Net.Sockets;
using System.Security.Cryptography;
using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>What this kernel offers: GRE over IPv4 (ip_gre) and over IPv6 (ip6_gre), and FOU (fou) for GRE in UDP.</summary>
/// <param name="Gre">`ip link add … type gre` works.</param>
/// <param name="Ip6Gre">`ip link add … type ip6gre` works.</param>
/// <param name="Detail">What the probe saw, for a log line or status output.</param>
/// <param name="Fou">`ip fou show` works: the kernel's GRE can be carried in UDP (encap fou).</param>
/// <param name="Fou6">fou6 is there too: ip6gre can be carried in UDP.</param>
public sealed record GreSupportResult(bool Gre, bool Ip6Gre, string Detail, bool Fou = false, bool Fou6 = false)
{
    /// <summary>
    /// The kernel dataplane where the kernel supports this outer family (and, for GRE in UDP, has FOU), else the
    /// userspace one, which speaks both encapsulations itself.
    /// </summary>
    public GreDataplaneKind DataplaneFor(AddressFamily outerFamily, TunnelEncapsulation encapsulation = TunnelEncapsulation.Gre) =>
        (outerFamily == AddressFamily.InterNetworkV6 ? Ip6Gre : Gre) && (encapsulation == TunnelEncapsulation.Gre || (outerFamily == AddressFamily.InterNetworkV6 ? Fou6 : Fou))
            ? GreDataplaneKind.Kernel
            : GreDataplaneKind.Userspace;
}

/// <summary>Detects kernel GRE at run time, by creating throwaway links in a throwaway network namespace.</summary>
public static class GreSupport
{
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Creates a temporary namespace, tries `ip link add` of type gre and ip6gre (which load their modules when they
    /// exist) and, with fou and fou6 loaded (<see cref="FouModules"/>), `ip fou show` in it, and deletes it. Nothing outside that namespace changes but the modules loaded. Needs root; without it, or without
    /// `ip`, the answer is "no kernel GRE", with the reason in <see cref="GreSupportResult.Detail"/>.
    /// </summary>
    public static Task<GreSupportResult> DetectAsync(CancellationToken cancellationToken) =>
        DetectAsync(CommandRunner.Instance, cancellationToken);

    internal static async Task<GreSupportResult> DetectAsync(ICommandRunner runner, CancellationToken cancellationToken)
    {
        var ns = "so-greprobe-" + RandomNumberGenerator.GetHexString(6, lowercase: true);
        CommandResult created;
        try
        {
            created = await runner.TryRunAsync(Command.Create("ip", "netns", "add", ns), cancellationToken).ConfigureAwait(false);
        }
        catch (CommandNotFoundException e)
        {
            return new GreSupportResult(false, false, $"could not probe for kernel GRE: {e.Message}");
        }

        if (created.ExitCode != 0)
        {
            return new GreSupportResult(false, false,
                $"could not create a probe namespace ({created.StandardError.Trim()}); assuming no kernel GRE. Run as root to detect it.");
        }

        try
        {
            var gre = await ProbeAsync(runner, ns, "gre", "192.0.2.1", "192.0.2.2", cancellationToken).ConfigureAwait(false);
            var ip6gre = await ProbeAsync(runner, ns, "ip6gre", "2001:db8::1", "2001:db8::2", cancellationToken).ConfigureAwait(false);
            var modules = await FouModules.LoadAsync(runner, ipv6: true, cancellationToken).ConfigureAwait(false);
            var fouResult = await runner.TryRunAsync(Command.Create("ip", "-n", ns, "fou", "show"), cancellationToken).ConfigureAwait(false);
            var fou = fouResult.ExitCode == 0 ? null
                : fouResult.StandardError.Trim().ReplaceLineEndings(" ") is { Length: > 0 } error ? error : $"ip exited with {fouResult.ExitCode}";
            // modprobe -a fou fou6 fails as a whole when either is missing (or modprobe is): fou answering says which.
            var fou6 = fou is null && modules is null;
            return new GreSupportResult(gre is null, ip6gre is null,
                $"gre: {gre ?? "supported"}; ip6gre: {ip6gre ?? "supported"}; fou: {fou ?? "supported"}; fou6: {(fou6 ? "supported" : modules ?? fou)}",
                fou is null, fou6);
        }
        finally
        {
            using var timeout = new CancellationTokenSource(CleanupTimeout);
            await runner.TryRunAsync(Command.Create("ip", "netns", "del", ns), timeout.Token).ConfigureAwait(false);
        }
    }

    private static async Task<string?> ProbeAsync(
        ICommandRunner runner, string ns, string type, string local, string remote, CancellationToken cancellationToken)
    {
        var result = await runner.TryRunAsync(
            Command.Create("ip", "-n", ns, "link", "add", "so-probe", "type", type, "local", local, "remote", remote), cancellationToken)
            .ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            var error = result.StandardError.Trim();
            return error.Length > 0 ? error : $"ip exited with {result.ExitCode}";
        }

        // The namespace goes away with the link in it; deleting the link first only keeps the probe tidy.
        await runner.TryRunAsync(Command.Create("ip", "-n", ns, "link", "del", "so-probe"), cancellationToken).ConfigureAwait(false);
        return null;
    }
}
