using Switchover.Processes;

namespace Switchover.Migration.Tests.Integration;

/// <summary>Integration tests need root, ip, tshark and /dev/net/tun. When one is missing they fail loudly; they never skip.</summary>
internal static class Root
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
            return "GRE integration tests need root (network namespaces, TUN devices, raw sockets). Run them as root, e.g. in CI.";
        }

        if (!File.Exists("/dev/net/tun"))
        {
            return "/dev/net/tun is missing: load the tun module (modprobe tun).";
        }

        foreach (var (tool, version, package) in new[] { ("ip", "-V", "iproute2"), ("tshark", "--version", "tshark") })
        {
            try
            {
                CommandRunner.Instance.RunAsync(Command.Create(tool, version), CancellationToken.None).GetAwaiter().GetResult();
            }
            catch (CommandException e)
            {
                return $"'{tool}' is missing ({e.Message}). Install it: apt-get install -y {package} (.ci/prerequisites does).";
            }
        }

        return null;
    }
}

/// <summary>The GRE integration tests build namespaces and move traffic: one at a time, so that they do not measure each other.</summary>
[CollectionDefinition(Name)]
public sealed class GreLabGroup
{
    public const string Name = "gre-lab";
}
