using System.Net.Sockets;
using Switchover.Migration.Gre;
using Switchover.Migration.Tests.Integration;

namespace Switchover.Migration.Tests.Gre;

public sealed class GreSupportTests
{
    [Fact(Timeout = 10_000)]
    public async Task A_kernel_with_gre_is_detected_in_a_throwaway_namespace_that_is_deleted_afterwards()
    {
        var runner = new RecordingRunner();
        var support = await GreSupport.DetectAsync(runner, CancellationToken.None);
        Assert.True(support.Gre);
        Assert.True(support.Ip6Gre);
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetworkV6));

        var lines = runner.Lines.ToList();
        var ns = runner.Commands[0].Arguments[2];
        Assert.StartsWith("so-greprobe-", ns, StringComparison.Ordinal);
        Assert.Equal($"ip netns add {ns}", lines[0]);
        Assert.Contains($"ip -n {ns} link add so-probe type gre local 192.0.2.1 remote 192.0.2.2", lines);
        Assert.Contains($"ip -n {ns} link add so-probe type ip6gre local 2001:db8::1 remote 2001:db8::2", lines);
        Assert.Contains($"ip -n {ns} fou show", lines);
        Assert.True(support.Fou && support.Fou6);
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetwork, TunnelEncapsulation.GreInUdp));
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetworkV6, TunnelEncapsulation.GreInUdp));
        Assert.Equal($"ip netns del {ns}", lines[^1]);

        // Everything in the throwaway namespace, but loading fou and fou6 first (the kernel's, not the namespace's).
        Assert.True(lines.IndexOf("modprobe -a fou fou6") is var load and > 0 && load < lines.IndexOf($"ip -n {ns} fou show"), string.Join('\n', lines));
        Assert.All(lines.Skip(1).SkipLast(1).Where(l => !l.StartsWith("modprobe ", StringComparison.Ordinal)), l => Assert.StartsWith($"ip -n {ns} ", l, StringComparison.Ordinal));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_kernel_with_gre_but_without_fou_takes_the_kernel_for_plain_GRE_and_userspace_for_GRE_in_UDP()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.Arguments.Contains("fou")
                ? RecordingRunner.Fail("RTNETLINK answers: No such file or directory\nError talking to the kernel", 1)
                : RecordingRunner.Ok(),
        };
        var support = await GreSupport.DetectAsync(runner, CancellationToken.None);

        Assert.False(support.Fou);
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetwork));
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetwork, TunnelEncapsulation.Gre));
        Assert.Equal(GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetwork, TunnelEncapsulation.GreInUdp));
        Assert.Equal(GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetworkV6, TunnelEncapsulation.GreInUdp));
        Assert.Contains("; fou: RTNETLINK answers: No such file or directory Error talking to the kernel;", support.Detail, StringComparison.Ordinal);
        Assert.StartsWith("ip netns del so-greprobe-", runner.Lines.Last(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_kernel_with_fou_but_without_fou6_takes_the_kernel_for_GRE_in_UDP_over_IPv4_only()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.FileName == "modprobe" ? RecordingRunner.Fail("modprobe: FATAL: Module fou6 not found in directory /lib/modules/6.1.0", 1) : RecordingRunner.Ok(),
        };
        var support = await GreSupport.DetectAsync(runner, CancellationToken.None);

        Assert.True(support.Fou);
        Assert.False(support.Fou6);
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetwork, TunnelEncapsulation.GreInUdp));
        Assert.Equal(GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetworkV6, TunnelEncapsulation.GreInUdp));
        Assert.Equal(GreDataplaneKind.Kernel, support.DataplaneFor(AddressFamily.InterNetworkV6));
        Assert.EndsWith("; fou6: 'modprobe -a fou fou6' failed: modprobe: FATAL: Module fou6 not found in directory /lib/modules/6.1.0", support.Detail, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task Without_root_the_answer_is_userspace_and_says_why()
    {
        var runner = new RecordingRunner { Answer = _ => RecordingRunner.Fail("mount --make-shared /run/netns failed: Operation not permitted", 1) };
        var support = await GreSupport.DetectAsync(runner, CancellationToken.None);
        Assert.False(support.Gre || support.Ip6Gre);
        Assert.Equal(GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetwork));
        Assert.Contains("Run as root", support.Detail, StringComparison.Ordinal);
        Assert.Single(runner.Commands);
    }

    [Fact(Timeout = 10_000)]
    public async Task The_probe_namespace_is_deleted_even_when_the_caller_gives_up()
    {
        using var cancelled = new CancellationTokenSource();
        var runner = new RecordingRunner();
        runner.Answer = c =>
        {
            if (c.Arguments.Contains("link"))
            {
                cancelled.Cancel();
                throw new OperationCanceledException(cancelled.Token);
            }

            return RecordingRunner.Ok();
        };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => GreSupport.DetectAsync(runner, cancelled.Token));
        Assert.StartsWith("ip netns del so-greprobe-", runner.Lines.Last(), StringComparison.Ordinal);
    }

    /// <summary>
    /// The real probe against the running kernel, whatever it is: its answer must be modprobe's (the module is on disk
    /// or built in), so it says "no GRE" on our machines' kernel and "GRE" on Debian's stock one (the VM lab runs this
    /// test there too, in KernelGreVmTests). Either way it leaves no namespace behind.
    /// </summary>
    [Fact(Timeout = 30_000)]
    public async Task The_real_probe_reports_what_the_running_kernel_has_and_leaves_no_namespace_behind()
    {
        Root.Require();
        var before = await NamespacesAsync();
        var gre = await KernelHasModuleAsync("ip_gre");
        var ip6gre = await KernelHasModuleAsync("ip6_gre");

        var support = await GreSupport.DetectAsync(CancellationToken.None);

        Assert.True(support.Gre == gre, $"modprobe says ip_gre is {(gre ? "" : "not ")}there; the probe says: {support.Detail}");
        Assert.True(support.Ip6Gre == ip6gre, $"modprobe says ip6_gre is {(ip6gre ? "" : "not ")}there; the probe says: {support.Detail}");
        Assert.Equal(gre ? GreDataplaneKind.Kernel : GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetwork));
        Assert.Equal(ip6gre ? GreDataplaneKind.Kernel : GreDataplaneKind.Userspace, support.DataplaneFor(AddressFamily.InterNetworkV6));
        Assert.Contains(gre ? "gre: supported" : "Unknown device type", support.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(await NamespacesAsync(), n => n.StartsWith("so-greprobe-", StringComparison.Ordinal) && !before.Contains(n));
    }

    /// <summary>`modprobe -n -q`: exit 0 when the module exists for the running kernel (a file under /lib/modules or built in).</summary>
    private static async Task<bool> KernelHasModuleAsync(string module)
    {
        var result = await Switchover.Processes.CommandRunner.Instance.TryRunAsync(
            Switchover.Processes.Command.Create("modprobe", "-n", "-q", module), CancellationToken.None);
        return result.ExitCode == 0;
    }

    private static async Task<string[]> NamespacesAsync()
    {
        var result = await Switchover.Processes.CommandRunner.Instance.RunAsync(Switchover.Processes.Command.Create("ip", "netns", "list"), CancellationToken.None);
        return [.. result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0])];
    }
}
