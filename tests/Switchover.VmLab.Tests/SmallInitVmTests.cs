using System.Diagnostics;

namespace Switchover.VmLab.Tests;

/// <summary>One VM with the small init (bash as PID 1) for all these tests. Linux, root and .ci/prerequisites.</summary>
public sealed class SmallInitVmTests : IClassFixture<SmallVmFixture>
{
    private const int Timeout = 180_000;
    private readonly VirtualMachine _vm;

    public SmallInitVmTests(SmallVmFixture fixture) => _vm = fixture.Vm;

    [Fact(Timeout = Timeout)]
    public async Task The_small_init_vm_runs_Debians_stock_kernel_not_the_hosts()
    {
        var result = (await _vm.RunAsync("uname -r; cat /proc/1/cmdline | tr '\\0' ' '")).EnsureSuccess();
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal(_vm.Boot.KernelRelease, lines[0]);
        Assert.StartsWith("6.1.", lines[0], StringComparison.Ordinal);
        Assert.NotEqual(Environment.OSVersion.Version.ToString(3), lines[0][..lines[0].IndexOf('-', StringComparison.Ordinal)]);
        Assert.Contains("small-init", lines[1], StringComparison.Ordinal);
    }

    [Fact(Timeout = Timeout)]
    public async Task A_kernel_GRE_tunnel_with_a_key_can_be_created_in_the_vm()
    {
        var result = await _vm.RunAsync(
            "ip link add g1 type gre local 192.0.2.1 remote 192.0.2.2 key 4242 && ip -d link show g1; code=$?; ip link del g1; exit $code");

        Assert.True(result.Succeeded, result.ToString());
        Assert.Contains("gre remote 192.0.2.2 local 192.0.2.1", result.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("ikey 0.0.16.146", result.StandardOutput, StringComparison.Ordinal); // 4242 = 0x1092
    }

    [Fact(Timeout = Timeout)]
    public async Task Dotnet_from_the_shared_host_root_runs_in_the_vm()
    {
        var host = await HostDotnetVersionAsync();

        var result = (await _vm.RunAsync("dotnet --version")).EnsureSuccess();

        Assert.Equal(host, result.StandardOutput.Trim());
    }

    [Fact(Timeout = Timeout)]
    public async Task The_host_root_is_read_only_to_the_vm_and_the_share_is_writable()
    {
        var name = $"vmlab-probe-{Guid.NewGuid():N}";

        var result = (await _vm.RunAsync(
            $"echo overlay > /etc/{name} && cat /etc/{name} && echo shared > {VirtualMachine.GuestShareDirectory}/{name} " +
            $"&& grep -E ' / (overlay|9p) ' /proc/mounts | cut -d' ' -f3,4 | cut -c1-40")).EnsureSuccess();

        Assert.StartsWith("overlay\n", result.StandardOutput, StringComparison.Ordinal);
        Assert.False(File.Exists($"/etc/{name}"), "a file written to /etc in the VM appeared on the host");
        Assert.Equal("shared\n", await File.ReadAllTextAsync(Path.Combine(_vm.HostShareDirectory, name)));
    }

    [Fact(Timeout = Timeout)]
    public async Task The_vm_has_no_network_device_only_loopback_and_the_namespaces_it_creates()
    {
        var result = await _vm.RunAsync("""
            # A network controller is PCI class 0x02xxxx, with or without a driver bound to it.
            for device in /sys/bus/pci/devices/*; do case "$(cat "$device/class")" in 0x02*) echo "nic ${device##*/}" ;; esac; done
            for device in /sys/class/net/*; do [ -e "$device/device" ] && echo "device ${device##*/}"; done
            ip route show default | sed 's/^/route /'
            ip netns add vmlab-a
            ip link add vmlab-v0 type veth peer name vmlab-v1 netns vmlab-a
            ip addr add 192.0.2.1/24 dev vmlab-v0 && ip link set vmlab-v0 up
            ip -n vmlab-a addr add 192.0.2.2/24 dev vmlab-v1 && ip -n vmlab-a link set vmlab-v1 up
            busybox ping -c 1 -W 10 192.0.2.2 >/dev/null && echo "ping ok"
            ip netns del vmlab-a
            """);

        Assert.True(result.Succeeded, result.ToString());
        Assert.Equal("ping ok", result.StandardOutput.Trim());
    }

    [Fact(Timeout = Timeout)]
    public async Task A_command_past_its_time_limit_is_killed_with_its_children_and_reported_as_timed_out()
    {
        var timedOut = await _vm.RunAsync("sleep 1234 & sleep 1235; echo not reached", TimeSpan.FromSeconds(3));
        var survivors = await _vm.RunAsync("pgrep -f 'sleep 123[45]' || echo none");

        Assert.True(timedOut.TimedOut, timedOut.ToString());
        Assert.DoesNotContain("not reached", timedOut.StandardOutput, StringComparison.Ordinal);
        Assert.True(timedOut.Duration < TimeSpan.FromSeconds(60), timedOut.ToString());
        Assert.Equal("none", survivors.StandardOutput.Trim());
    }

    [Fact(Timeout = Timeout)]
    public async Task Commands_run_concurrently()
    {
        var marker = $"/tmp/vmlab-concurrent-{Guid.NewGuid():N}";
        var waiter = _vm.RunAsync($"until [ -e {marker} ]; do sleep 0.1; done; echo released", TimeSpan.FromSeconds(60));

        var releaser = await _vm.RunAsync($"touch {marker}");
        var waited = await waiter;

        Assert.True(releaser.Succeeded, releaser.ToString());
        Assert.True(waited.Succeeded, waited.ToString());
        Assert.Equal("released", waited.StandardOutput.Trim());
    }

    [Fact(Timeout = Timeout)]
    public async Task A_failing_command_reports_its_exit_code_and_standard_error()
    {
        var result = await _vm.RunAsync(["sh", "-c", "echo 'it''s out'; echo oops >&2; exit 7"]);

        Assert.Equal(7, result.ExitCode);
        Assert.False(result.TimedOut);
        Assert.Equal("its out\n", result.StandardOutput);
        Assert.Equal("oops\n", result.StandardError);
        Assert.Throws<VmCommandException>(() => result.EnsureSuccess());
    }

    private static async Task<string> HostDotnetVersionAsync()
    {
        using var dotnet = Process.Start(new ProcessStartInfo("dotnet", "--version") { RedirectStandardOutput = true, WorkingDirectory = "/" })!;
        var version = await dotnet.StandardOutput.ReadToEndAsync();
        await dotnet.WaitForExitAsync();
        return version.Trim();
    }
}
