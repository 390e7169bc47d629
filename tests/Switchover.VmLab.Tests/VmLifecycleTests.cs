using Switchover.VmLab.Boot;
using Switchover.VmLab.Qemu;

namespace Switchover.VmLab.Tests;

/// <summary>A VM stopped at any point, also in the middle of its boot, leaves no process and no file behind.</summary>
public sealed class VmLifecycleTests
{
    [Fact(Timeout = 180_000)]
    public async Task A_vm_whose_boot_is_cancelled_leaves_no_qemu_process_and_no_temporary_files()
    {
        await BootImage.GetOrBuildAsync(GuestKernel.Find(), null, null, CancellationToken.None);
        var launched = new TaskCompletionSource<(int Group, string Directory)>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var cancel = new CancellationTokenSource();
        var options = new VmOptions { OnQemuStarted = (group, directory) => launched.TrySetResult((group, directory)) };

        var start = VirtualMachine.StartAsync(options, cancel.Token);
        var (group, directory) = await launched.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.NotEmpty(Leftovers.ProcessesInGroup(group)); // qemu is running: the check below can see it
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => start);
        Assert.Empty(Leftovers.Of(group, null, directory));
    }

    [Fact(Timeout = 180_000)]
    public async Task A_vm_that_does_not_boot_in_time_is_stopped_and_the_error_shows_its_console()
    {
        await BootImage.GetOrBuildAsync(GuestKernel.Find(), null, null, CancellationToken.None);
        (int Group, string Directory)? launched = null;
        var options = new VmOptions { BootTimeout = TimeSpan.FromSeconds(3), OnQemuStarted = (group, directory) => launched = (group, directory) };

        var error = await Assert.ThrowsAsync<VmLabException>(() => VirtualMachine.StartAsync(options));

        Assert.Contains("did not answer within 3 s", error.Message, StringComparison.Ordinal);
        Assert.Contains("Last console lines:", error.Message, StringComparison.Ordinal);
        Assert.NotNull(launched);
        Assert.Empty(Leftovers.Of(launched.Value.Group, null, launched.Value.Directory));
    }

    [Fact]
    public void The_directory_of_a_vm_whose_qemu_is_gone_counts_as_abandoned_and_a_fresh_one_does_not()
    {
        var directory = Directory.CreateTempSubdirectory("vmlab-abandoned-").FullName;
        try
        {
            Assert.False(VirtualMachine.IsAbandoned(directory)); // just created: maybe a VM starting in another process

            File.WriteAllText(Path.Combine(directory, "qemu.pid"), $"{Environment.ProcessId}\n");
            Assert.True(VirtualMachine.IsAbandoned(directory)); // the pid is alive but is not this directory's qemu

            File.WriteAllText(Path.Combine(directory, "qemu.pid"), "999999999\n");
            Assert.True(VirtualMachine.IsAbandoned(directory));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task The_kvm_probe_answers_within_its_bound_and_leaves_no_qemu_behind()
    {
        var boot = await BootImage.GetOrBuildAsync(GuestKernel.Find(), null, null, CancellationToken.None);
        var before = QemuPids();
        var started = System.Diagnostics.Stopwatch.StartNew();

        var accelerator = await AcceleratorChoice.ProbeAsync(boot, TimeSpan.FromSeconds(10), CancellationToken.None);

        Assert.True(started.Elapsed < TimeSpan.FromSeconds(40), $"the probe took {started.Elapsed}");
        Assert.True(
            accelerator.Name == "kvm" ? accelerator.Reason.Contains("reached the initramfs", StringComparison.Ordinal) : accelerator.Name == "tcg",
            accelerator.ToString());
        Assert.DoesNotContain(QemuPids().Except(before), pid => TryRead($"/proc/{pid}/cmdline").Contains("vmlab.init=probe", StringComparison.Ordinal));
    }

    private static HashSet<int> QemuPids() =>
        [.. Directory.GetDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out var pid) ? pid : 0)
            .Where(pid => pid > 0 && TryRead($"/proc/{pid}/comm").StartsWith("qemu-system", StringComparison.Ordinal))];

    private static string TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return "";
        }
    }
}
