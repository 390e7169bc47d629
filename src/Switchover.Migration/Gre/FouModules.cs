using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>
/// Loads the kernel's FOU (foo-over-UDP) modules before the kernel's GRE in UDP needs them. Nothing else would:
/// Debian 6.1's fou declares no alias for its generic netlink family, so `ip fou add` does not load it, and ip6gre's
/// `encap fou` needs fou6, which nothing requests (both found in the VM lab). `modprobe` of a module that is loaded or
/// built in succeeds and changes nothing; the modules stay loaded, as ip_gre does once `ip link add` loaded it.
/// </summary>
internal static class FouModules
{
    /// <summary>`modprobe -a fou [fou6]`.</summary>
    internal static Command LoadCommand(bool ipv6) => ipv6 ? Command.Create("modprobe", "-a", "fou", "fou6") : Command.Create("modprobe", "-a", "fou");

    /// <summary>Loads fou (and fou6 for an IPv6 outer); null when they are there, else what went wrong.</summary>
    internal static async Task<string?> LoadAsync(ICommandRunner runner, bool ipv6, CancellationToken cancellationToken)
    {
        try
        {
            var result = await runner.TryRunAsync(LoadCommand(ipv6), cancellationToken).ConfigureAwait(false);
            return result.ExitCode == 0 ? null
                : $"'{LoadCommand(ipv6)}' failed: " + (result.StandardError.Trim().ReplaceLineEndings(" ") is { Length: > 0 } error ? error : $"exit {result.ExitCode}");
        }
        catch (CommandNotFoundException e)
        {
            return $"modprobe was not found ({e.Message}; apt-get install kmod)";
        }
    }
}
