using Switchover.Processes;

namespace Switchover.IntegrationTests;

/// <summary>Integration tests need root, nft, conntrack, ip and iptables-restore (FirewallTests load ufw's and Docker's rulesets). When one is missing they fail loudly; they never skip.</summary>
internal static class Prerequisites
{
    private static readonly Lazy<string?> Missing = new(Check);

    public static void Require()
    {
        if (Missing.Value is { } problem)
        {
            Assert.Fail(problem);
        }
    }

    private static string? Check()
    {
        if (Environment.UserName != "root")
        {
            return "Integration tests need root (network namespaces, nftables). Run them as root, e.g. in CI.";
        }

        foreach (var (tool, package) in new[] { ("nft", "nftables"), ("conntrack", "conntrack"), ("ip", "iproute2"), ("iptables-restore", "iptables") })
        {
            try
            {
                CommandRunner.Instance.RunAsync(Command.Create(tool, tool == "ip" ? "-V" : "--version"), CancellationToken.None).GetAwaiter().GetResult();
            }
            catch (CommandException e)
            {
                return $"'{tool}' is missing ({e.Message}). Install it: apt-get install -y {package} (.ci/prerequisites does).";
            }
        }

        return null;
    }
}
