namespace Switchover.VmLab;

/// <summary>Which program is PID 1 in the VM.</summary>
public enum VmInit
{
    /// <summary>A bash script (Guest/small-init): mounts, loopback up, the agent. For kernel tests such as GRE.</summary>
    Small,

    /// <summary>systemd (/lib/systemd/systemd), booting vmlab.target: basic.target and the agent, no getty, network or timers.</summary>
    Systemd,
}

/// <summary>How to start a <see cref="VirtualMachine"/>. Every default is sized for TCG on a shared 2-core machine.</summary>
public sealed class VmOptions
{
    public VmInit Init { get; init; } = VmInit.Small;

    /// <summary>Guest memory. Default 2560 MiB (a systemd boot plus a few .NET processes).</summary>
    public int MemoryMiB { get; init; } = 2560;

    /// <summary>Virtual CPUs. Default 2.</summary>
    public int Cpus { get; init; } = 2;

    /// <summary>Until the agent answers. Default 4 minutes: a TCG boot takes 15-60 s, more on a loaded machine.</summary>
    public TimeSpan BootTimeout { get; init; } = TimeSpan.FromMinutes(4);

    /// <summary>Default time limit of <see cref="VirtualMachine.RunAsync(string, TimeSpan?, CancellationToken)"/>. Default 2 minutes.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Modules loaded in the initramfs before the init starts. Default <see cref="Boot.BootImage.DefaultModules"/>.</summary>
    public IReadOnlyList<string>? Modules { get; init; }

    /// <summary>Where built boot images are kept between runs. Default $SWITCHOVER_VMLAB_CACHE or /tmp/switchover-vmlab-cache.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>"kvm", "tcg" or null to choose (also $SWITCHOVER_VMLAB_ACCEL): KVM when it boots the kernel, else TCG.</summary>
    public string? Accelerator { get; init; }

    /// <summary>
    /// Environment of every command in the VM. Default: PATH and the DOTNET_* variables of this process, HOME=/root,
    /// and the .NET CLI's first-run and telemetry switched off.
    /// </summary>
    public IReadOnlyDictionary<string, string>? Environment { get; init; }

    /// <summary>Called with qemu's process group and the VM's directory right after qemu starts (internal for testing).</summary>
    internal Action<int, string>? OnQemuStarted { get; init; }

    internal IReadOnlyDictionary<string, string> EffectiveEnvironment()
    {
        if (Environment is not null)
        {
            return Environment;
        }

        var environment = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["PATH"] = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ["HOME"] = "/root",
            ["LANG"] = "C.UTF-8",
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
            ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
        };
        foreach (System.Collections.DictionaryEntry variable in System.Environment.GetEnvironmentVariables())
        {
            if (variable.Key is string name && name.StartsWith("DOTNET_", StringComparison.Ordinal) && variable.Value is string value)
            {
                environment[name] = value;
            }
        }

        return environment;
    }
}
