using Switchover.VmLab.Boot;
using Switchover.VmLab.Qemu;

namespace Switchover.VmLab.Tests;

public sealed class QemuLaunchTests
{
    private static readonly QemuLaunch Launch = new()
    {
        Accelerator = Accelerator.Tcg("test"),
        Boot = new BootImage("6.1.0-57-amd64", "/cache/vmlinux", "PVH", "/cache/initramfs.cpio", "0123456789abcdef", []),
        Init = "systemd",
        ConsoleLog = "/tmp/vm,1/console.log",
        AgentSocket = "/tmp/vm,1/agent.sock",
        ShareDirectory = "/tmp/vm,1/share",
        PidFile = "/tmp/vm,1/qemu.pid",
    };

    [Fact]
    public void The_vm_gets_no_network_device_at_all()
    {
        var arguments = Launch.Arguments;

        Assert.Equal("none", arguments[arguments.ToList().IndexOf("-nic") + 1]);
        Assert.Contains("-nodefaults", arguments);
        Assert.DoesNotContain(arguments, a => a.StartsWith("-netdev", StringComparison.Ordinal) || a.Contains("user,", StringComparison.Ordinal));
    }

    [Fact]
    public void The_host_root_is_shared_read_only_and_the_share_read_write_with_commas_escaped()
    {
        var shares = Launch.Arguments.Zip(Launch.Arguments.Skip(1)).Where(p => p.First == "-virtfs").Select(p => p.Second).ToList();

        Assert.Equal(
            ["local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
             "local,path=/tmp/vm,,1/share,mount_tag=vmlab.share,security_model=none,multidevs=remap"],
            shares);
    }

    [Fact]
    public void The_kernel_command_line_names_the_init_and_sends_the_console_to_the_serial_port()
    {
        Assert.Contains("vmlab.init=systemd", Launch.KernelArguments.Split(' '));
        Assert.Contains("console=ttyS0", Launch.KernelArguments.Split(' '));
        Assert.Contains("panic=-1", Launch.KernelArguments.Split(' '));
        Assert.Contains("-no-reboot", Launch.Arguments);
        Assert.Contains("q35,accel=tcg", Launch.Arguments);
    }
}
