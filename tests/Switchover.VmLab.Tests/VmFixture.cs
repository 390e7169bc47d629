using System.Diagnostics;
using Switchover.VmLab.Qemu;

namespace Switchover.VmLab.Tests;

/// <summary>
/// One VM shared by the tests of a class (booting one takes 15-60 s under TCG). Disposing it checks what the lab
/// promises: qemu and its process group are gone and the VM's temporary directory is removed; if not, the class
/// fails with the leftover named.
/// </summary>
public abstract class VmFixture : IAsyncLifetime
{
    private readonly VmInit _init;
    private VirtualMachine? _vm;

    protected VmFixture(VmInit init) => _init = init;

    public VirtualMachine Vm => _vm ?? throw new InvalidOperationException("The VM is not started.");

    public async Task InitializeAsync()
    {
        var started = Stopwatch.StartNew();
        _vm = await VirtualMachine.StartAsync(new VmOptions { Init = _init });
        // Shown with `dotnet test --logger "console;verbosity=detailed"`; the README's numbers come from here.
        Console.WriteLine(
            $"vmlab: {_init} VM booted in {_vm.BootTime.TotalSeconds:0.0} s ({started.Elapsed.TotalSeconds:0.0} s with the boot image) " +
            $"under {_vm.Accelerator.Name} ({_vm.Accelerator.Reason}); kernel {_vm.KernelRelease} from {_vm.Boot.KernelImageKind}");
    }

    public async Task DisposeAsync()
    {
        if (_vm is null)
        {
            return;
        }

        var group = _vm.ProcessGroup;
        var pid = _vm.QemuPid;
        var directory = _vm.WorkDirectory;
        await _vm.DisposeAsync();
        var leftovers = Leftovers.Of(group, pid, directory);
        if (leftovers.Count > 0)
        {
            throw new InvalidOperationException($"Disposing the {_init} VM left {string.Join("; ", leftovers)}.");
        }
    }
}

public sealed class SmallVmFixture : VmFixture
{
    public SmallVmFixture()
        : base(VmInit.Small)
    {
    }
}

public sealed class SystemdVmFixture : VmFixture
{
    public SystemdVmFixture()
        : base(VmInit.Systemd)
    {
    }
}

/// <summary>What a stopped VM must not leave: a process in its group, its qemu, its temporary directory.</summary>
internal static class Leftovers
{
    public static List<string> Of(int processGroup, int? qemuPid, string workDirectory)
    {
        var found = new List<string>();
        var inGroup = ProcessesInGroup(processGroup);
        if (inGroup.Count > 0)
        {
            found.Add($"processes {string.Join(", ", inGroup)} in its process group {processGroup}");
        }

        if (qemuPid is { } pid && File.Exists($"/proc/{pid}/cmdline")
            && File.ReadAllText($"/proc/{pid}/cmdline").Contains(QemuProcess.Program, StringComparison.Ordinal))
        {
            found.Add($"qemu (pid {pid})");
        }

        if (Directory.Exists(workDirectory))
        {
            found.Add($"its directory {workDirectory}");
        }

        return found;
    }

    /// <summary>Pids whose process group (field 5 of /proc/&lt;pid&gt;/stat) is <paramref name="group"/>.</summary>
    public static List<int> ProcessesInGroup(int group)
    {
        var pids = new List<int>();
        foreach (var directory in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid))
            {
                continue;
            }

            try
            {
                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                // The command name (field 2) is in parentheses and may contain spaces; count fields after the last ')'.
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (fields.Length > 2 && int.TryParse(fields[2], out var pgrp) && pgrp == group)
                {
                    pids.Add(pid);
                }
            }
            catch (IOException)
            {
                // Gone while we looked.
            }
        }

        return pids;
    }
}
