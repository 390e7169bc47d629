namespace Switchover.VmLab.Tests;

/// <summary>One VM with systemd as PID 1 for all these tests (filter: FullyQualifiedName~Systemd).</summary>
public sealed class SystemdVmTests : IClassFixture<SystemdVmFixture>
{
    private const int Timeout = 240_000;
    private readonly VirtualMachine _vm;

    public SystemdVmTests(SystemdVmFixture fixture) => _vm = fixture.Vm;

    [Fact(Timeout = Timeout)]
    public async Task Systemd_is_pid_1_and_the_boot_ends_running_or_degraded()
    {
        var state = await _vm.WaitForSystemdAsync(TimeSpan.FromMinutes(3));
        var pid1 = (await _vm.RunAsync("cat /proc/1/comm; readlink /proc/1/exe; systemctl --failed --no-legend --plain")).EnsureSuccess();
        var lines = pid1.StandardOutput.Split('\n');

        Assert.Equal("systemd", lines[0]);
        Assert.Equal("/usr/lib/systemd/systemd", lines[1]);
        Assert.True(state is "running" or "degraded", $"systemctl is-system-running: {state}; failed units:\n{string.Join('\n', lines.Skip(2))}");
    }

    [Fact(Timeout = Timeout)]
    public async Task A_transient_Systemd_unit_runs_and_its_output_is_in_the_journal()
    {
        var unit = $"vmlab-probe-{Guid.NewGuid():N}";
        var marker = $"hello from {unit}";
        await _vm.WaitForSystemdAsync(TimeSpan.FromMinutes(3));

        var run = await _vm.RunAsync(["systemd-run", "--wait", "--quiet", $"--unit={unit}", "/bin/echo", marker]);
        // journald may not have written the unit's line yet when systemd-run returns; wait for it, bounded.
        var journal = await _vm.RunAsync(
            $"for i in $(seq 100); do journalctl --no-pager -o cat -u {unit} | grep -qxF {VirtualMachine.Quote(marker)} && break; sleep 0.2; done; " +
            $"journalctl --no-pager -o cat -u {unit}",
            TimeSpan.FromSeconds(60));

        Assert.True(run.Succeeded, run.ToString());
        Assert.Contains(marker, journal.StandardOutput.Split('\n'));
    }

    [Fact(Timeout = Timeout)]
    public async Task The_Systemd_vm_has_its_own_machine_id_and_runs_none_of_the_hosts_services()
    {
        await _vm.WaitForSystemdAsync(TimeSpan.FromMinutes(3));

        var result = (await _vm.RunAsync(
            "cat /etc/machine-id; systemctl is-active vmlab.target; " +
            "systemctl is-active firewalld.service ufw.service postgresql.service getty@tty1.service systemd-timesyncd.service || true"))
            .EnsureSuccess();
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.NotEqual((await File.ReadAllTextAsync("/etc/machine-id")).Trim(), lines[0]);
        // systemd answers and booted the lab's target; none of the host's services runs.
        Assert.Equal(["active", "inactive", "inactive", "inactive", "inactive", "inactive"], lines.Skip(1));
    }
}
