using System.Globalization;
using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Qemu;

/// <summary>Everything one qemu-system-x86_64 run needs; <see cref="Arguments"/> renders its command line.</summary>
internal sealed record QemuLaunch
{
    /// <summary>The 9p tag under which the guest finds the host's root filesystem.</summary>
    public const string HostRootTag = "hostroot";

    /// <summary>The 9p tag of the writable results share.</summary>
    public const string ShareTag = "vmlab.share";

    /// <summary>The name of the agent's virtio-serial port.</summary>
    public const string AgentPortName = "vmlab.agent";

    public required Accelerator Accelerator { get; init; }

    public required BootImage Boot { get; init; }

    /// <summary>Which init the initramfs hands over to: small, systemd or probe.</summary>
    public required string Init { get; init; }

    public required string ConsoleLog { get; init; }

    public int MemoryMiB { get; init; } = 2560;

    public int Cpus { get; init; } = 2;

    /// <summary>Unix socket the test listens on; qemu connects to it at start. None for the accelerator probe.</summary>
    public string? AgentSocket { get; init; }

    /// <summary>Host directory shared read-write with the guest at /mnt/vmlab. None for the accelerator probe.</summary>
    public string? ShareDirectory { get; init; }

    public string? PidFile { get; init; }

    public string KernelArguments => string.Join(' ',
    [
        "console=ttyS0",
        "loglevel=4",
        // A guest panic ends qemu at once (with -no-reboot) instead of leaving the test waiting for its timeout.
        "panic=-1",
        // Under TCG every page-table switch (KPTI) and barrier is emulated; the VM is a test fixture, not a sandbox.
        "mitigations=off",
        "random.trust_cpu=on",
        $"vmlab.init={Init}",
    ]);

    public IReadOnlyList<string> Arguments
    {
        get
        {
            var arguments = new List<string>
            {
                "-name", "switchover-vmlab",
                "-machine", $"q35,accel={Accelerator.Name}",
                "-cpu", Accelerator.Cpu,
                "-m", MemoryMiB.ToString(CultureInfo.InvariantCulture),
                "-smp", Cpus.ToString(CultureInfo.InvariantCulture),
                // No default devices, no display, no monitor, and no network device at all: the VM's only network
                // is its loopback and the namespaces and veths it creates itself.
                "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
                "-no-reboot",
                "-chardev", $"file,id=console,path={Escape(ConsoleLog)}",
                "-serial", "chardev:console",
                "-kernel", Boot.KernelImage,
                "-initrd", Boot.Initramfs,
                "-append", KernelArguments,
                "-virtfs", $"local,path=/,mount_tag={HostRootTag},security_model=none,readonly=on,multidevs=remap",
            };
            if (ShareDirectory is not null)
            {
                arguments.AddRange(["-virtfs", $"local,path={Escape(ShareDirectory)},mount_tag={ShareTag},security_model=none,multidevs=remap"]);
            }

            if (AgentSocket is not null)
            {
                arguments.AddRange(
                [
                    "-device", "virtio-serial-pci,id=agent-bus",
                    "-chardev", $"socket,id=agent,path={Escape(AgentSocket)}",
                    "-device", $"virtserialport,bus=agent-bus.0,chardev=agent,name={AgentPortName}",
                ]);
            }

            if (PidFile is not null)
            {
                arguments.AddRange(["-pidfile", PidFile]);
            }

            return arguments;
        }
    }

    // qemu's option syntax doubles a comma inside a value.
    private static string Escape(string value) => value.Replace(",", ",,", StringComparison.Ordinal);
}

/// <summary>How qemu runs the guest's CPUs: "kvm" (hardware) or "tcg" (qemu's own translator), and why.</summary>
public sealed record Accelerator(string Name, string Cpu, string Reason)
{
    /// <summary>
    /// TCG's "max" CPU has every feature TCG emulates, including SSE4.2 and POPCNT, which .NET requires.
    /// </summary>
    public static Accelerator Tcg(string reason) =>
        new("tcg", Environment.GetEnvironmentVariable("SWITCHOVER_VMLAB_CPU") is { Length: > 0 } cpu ? cpu : "max", reason);

    public static Accelerator Kvm(string reason) => new("kvm", "host", reason);
}
