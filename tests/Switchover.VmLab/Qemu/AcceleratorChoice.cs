using System.Diagnostics;
using System.Runtime.InteropServices;
using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Qemu;

/// <summary>
/// Chooses KVM when it boots Debian's kernel on this host, else TCG. A forced choice (option or
/// $SWITCHOVER_VMLAB_ACCEL) wins; without /dev/kvm, or with a PVM host (kvm_pvm, see README.md), it is TCG at once;
/// otherwise a probe boots the lab's initramfs under KVM to the point where it prints "vmlab-probe: ok" (bounded),
/// and the answer is cached next to the boot image, keyed by host kernel, qemu and boot image.
/// </summary>
internal static class AcceleratorChoice
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(20);
    private static readonly SemaphoreSlim ProbeLock = new(1, 1);

    public static async Task<Accelerator> ChooseAsync(string? forced, BootImage boot, string cacheDirectory, CancellationToken cancellationToken)
    {
        forced ??= Environment.GetEnvironmentVariable("SWITCHOVER_VMLAB_ACCEL") is { Length: > 0 } variable ? variable : null;
        switch (forced)
        {
            case "tcg":
                return Accelerator.Tcg("TCG was asked for");
            case "kvm":
                return Accelerator.Kvm("KVM was asked for");
            case null:
                break;
            default:
                throw new VmLabException($"Unknown accelerator '{forced}'; use kvm, tcg, or leave it unset to choose.");
        }

        if (KvmUnusable() is { } reason)
        {
            return Accelerator.Tcg(reason);
        }

        var host = RuntimeInformation.OSDescription.Replace(' ', '_');
        var cache = Path.Combine(cacheDirectory, $"accelerator-{boot.KernelRelease}-{boot.Key}-{host}");
        await ProbeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (File.Exists(cache) && File.ReadAllLines(cache) is [var name, var cachedReason, ..])
            {
                return name == "kvm" ? Accelerator.Kvm(cachedReason + " (cached)") : Accelerator.Tcg(cachedReason + " (cached)");
            }

            var chosen = await ProbeAsync(boot, ProbeTimeout, cancellationToken).ConfigureAwait(false);
            Directory.CreateDirectory(cacheDirectory);
            await File.WriteAllLinesAsync(cache, [chosen.Name, chosen.Reason], cancellationToken).ConfigureAwait(false);
            return chosen;
        }
        finally
        {
            ProbeLock.Release();
        }
    }

    /// <summary>Why KVM cannot work here without trying, or null if a probe must tell.</summary>
    internal static string? KvmUnusable()
    {
        try
        {
            using var kvm = File.Open("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"/dev/kvm cannot be opened ({e.Message})";
        }

        // PVM (Pagetable-based Virtual Machine) exposes /dev/kvm inside a VM without VMX; it runs only guest kernels
        // built as PVM guests, and a stock kernel hangs right after the real-mode setup (see README.md).
        if (Directory.Exists("/sys/module/kvm_pvm"))
        {
            return "the host's KVM is PVM (kvm_pvm), which boots only PVM-enabled guest kernels, not Debian's stock kernel";
        }

        return null;
    }

    /// <summary>Boots the initramfs under KVM up to its first line (internal for testing).</summary>
    internal static async Task<Accelerator> ProbeAsync(BootImage boot, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var directory = Directory.CreateTempSubdirectory("switchover-vm-probe-").FullName;
        try
        {
            var console = Path.Combine(directory, "console.log");
            var launch = new QemuLaunch
            {
                Accelerator = Accelerator.Kvm("probe"),
                Boot = boot,
                Init = "probe",
                ConsoleLog = console,
                MemoryMiB = 512,
                PidFile = Path.Combine(directory, "qemu.pid"),
            };
            var started = Stopwatch.StartNew();
            await using var qemu = QemuProcess.Start(launch.Arguments, launch.PidFile);
            while (true)
            {
                var exited = qemu.Exited.IsCompleted;
                if (File.Exists(console) && (await File.ReadAllTextAsync(console, cancellationToken).ConfigureAwait(false)).Contains("vmlab-probe: ok", StringComparison.Ordinal))
                {
                    return Accelerator.Kvm($"a KVM probe boot reached the initramfs in {started.Elapsed.TotalSeconds:0.0} s");
                }

                if (exited || started.Elapsed > timeout)
                {
                    break;
                }

                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }

            var output = qemu.Output.Trim();
            return Accelerator.Tcg(qemu.Exited.IsCompleted
                ? $"a KVM probe boot failed: qemu exited ({(output.Length > 0 ? output : "no message")})"
                : $"a KVM probe boot did not reach the initramfs within {timeout.TotalSeconds:0} s");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
