using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Switchover.VmLab.Tests;

/// <summary>
/// The sample unit (samples/systemd/echo.service) under a real systemd (PID 1 of a lab VM): `systemctl reload` is the
/// deploy, systemd follows each generation as the unit's main process, a failed deploy leaves the running one serving,
/// `systemctl stop` leaves nothing behind. One VM for the class; the three tests about the reload run of the sample
/// unit (v1, then three reloads, then stop) share that one run, which the first of them starts.
/// Filter: FullyQualifiedName~SystemdHandoff. Needs a Release (or Debug) build of the solution first.
/// </summary>
public sealed class SystemdHandoffTests : IClassFixture<SystemdHandoffFixture>
{
    // Under TCG a generation takes 30-60 s from launch to serving on a quiet machine, minutes on a busy one; the shared
    // reload run (v1 and three reloads) is bounded inside, this is the backstop.
    private const int Timeout = 900_000;
    private readonly SystemdHandoffFixture _fixture;

    public SystemdHandoffTests(SystemdHandoffFixture fixture) => _fixture = fixture;

    private VirtualMachine Vm => _fixture.Vm;

    [Fact(Timeout = Timeout)]
    public async Task Systemd_reloads_hand_the_port_over_with_zero_failed_requests_and_the_main_pid_follows_each_generation()
    {
        var run = await _fixture.ReloadRunAsync();

        Assert.True(run.Load.Requests > 0 && run.Load.KeepAliveRequests > 0, $"The client sent nothing:\n{run.Load}");
        Assert.True(run.Load.Failures.Count == 0, $"Failed requests:\n{run.Load}");
        // During ExecReload systemd reports "reloading" (the unit is up, its reload job runs); anything else is a break.
        Assert.True(
            run.Load.States.Keys.All(s => s is "active" or "reloading"),
            $"systemctl is-active said something other than active/reloading: {run.Load}");
        Assert.Equal(4, run.Generations.Count);
        Assert.Equal(run.Generations.Count, run.Generations.Select(g => g.Pid).Distinct().Count());
        foreach (var generation in run.Generations)
        {
            Assert.True(generation.Pid == generation.MainPid, $"After {generation.Step}: the answer came from pid {generation.Pid}, systemd's MainPID is {generation.MainPid}.");
            Assert.True(generation.ActiveState == "active", $"After {generation.Step}: systemctl is-active said {generation.ActiveState}.");
        }

        // The client saw every generation answer.
        Assert.All(run.Generations, g => Assert.Contains(g.Pid, run.Load.PidsSeen));
    }

    [Fact(Timeout = Timeout)]
    public async Task Systemd_stop_drains_every_generation_and_leaves_no_table_state_or_process_and_the_unit_inactive()
    {
        var run = await _fixture.ReloadRunAsync();

        Assert.True(run.Stop.Succeeded, run.Stop.ToString());
        Assert.True(
            run.AfterStop.ActiveState == "inactive" && run.AfterStop.Result == "success",
            $"After the stop the unit is {run.AfterStop.ActiveState} (Result={run.AfterStop.Result}).\nJournal:\n{string.Join('\n', run.Journal.Split('\n').TakeLast(60))}");
        Assert.False(run.AfterStop.Tables.Contains("switchover_echo", StringComparison.Ordinal), $"nft list tables:\n{run.AfterStop.Tables}");
        Assert.False(run.AfterStop.StateDirectoryExists, "/run/switchover/echo is left after the stop.");
        Assert.True(run.AfterStop.Processes.Length == 0, $"Processes left after the stop:\n{run.AfterStop.Processes}");
        // Every generation left its namespace on its own (it drained), none was killed by systemd.
        foreach (var id in run.GenerationIds)
        {
            Assert.Contains($"Generation {id} left namespace 'echo'", run.Journal, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("SIGKILL", run.Journal, StringComparison.Ordinal);
    }

    [Fact(Timeout = Timeout)]
    public async Task The_Systemd_journal_of_the_unit_holds_the_handoff_lines_of_each_generation()
    {
        var run = await _fixture.ReloadRunAsync();

        Assert.Equal(run.Generations.Count, run.GenerationIds.Count);
        for (var i = 0; i < run.Generations.Count; i++)
        {
            var (id, pid) = (run.GenerationIds[i], run.Generations[i].Pid);
            Assert.Contains($"Generation {id} of namespace 'echo' registered (pid {pid})", run.Journal, StringComparison.Ordinal);
            Assert.Matches(new Regex($@"Handoff in namespace 'echo': generation [^\n]*-> {id},"), run.Journal);
        }
    }

    [Fact(Timeout = Timeout)]
    public async Task A_Systemd_reload_whose_generation_fails_its_health_check_fails_with_the_reason_and_the_running_one_serves_on()
    {
        await using var unit = await EchoUnit.StartAsync(Vm, _fixture.Paths, dropIn:
            // The reload's generation is the TestServer with its failing health check, ready never.
            "[Service]\nExecReload=\n" +
            $"ExecReload=/usr/bin/dotnet ${{SWITCHOVER_CLI}} deploy --namespace echo --timeout 240s -- /usr/bin/dotnet {_fixture.Paths.TestServer} " +
            $"--urls http://*:8080 --contentRoot {Path.GetDirectoryName(_fixture.Paths.TestServer)} --FailHealth=true --Switchover:ReadinessTimeout=00:00:03\n");
        var before = await unit.ServingPidAsync();

        var reload = await Vm.RunAsync("systemctl reload echo", TimeSpan.FromSeconds(120));
        var status = await Vm.RunAsync("systemctl status --no-pager -l -n 30 echo; true");
        var after = await unit.ServingPidAsync();
        var mainPid = await unit.MainPidAsync();
        var active = await unit.ActiveStateAsync();

        Assert.False(reload.Succeeded, $"The reload succeeded:\n{reload}");
        Assert.False(reload.TimedOut, reload.ToString());
        Assert.Contains("unhealthy", status.StandardOutput, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("FailHealth is set", status.StandardOutput, StringComparison.Ordinal);
        Assert.Equal(before, after);
        Assert.Equal(before, mainPid);
        Assert.Equal("active", active);
    }

    /// <summary>
    /// The break on purpose, kept as a negative test: NotifyAccess=main makes systemd drop the new generation's MAINPID=
    /// (it comes from a process that is not the main one), which is what a generation without the notification does.
    /// When v1 drains and exits, systemd takes the service for stopped and kills v2 with the cgroup.
    /// </summary>
    [Fact(Timeout = Timeout)]
    public async Task Without_the_main_pid_notification_Systemd_kills_the_new_generation_when_the_old_one_exits()
    {
        await using var unit = await EchoUnit.StartAsync(Vm, _fixture.Paths, dropIn: "[Service]\nNotifyAccess=main\n");
        var v1 = await unit.ServingPidAsync();

        var reload = await Vm.RunAsync("systemctl reload echo", TimeSpan.FromSeconds(120));
        // The deploy itself succeeds: v2 took the port over. Then v1 drains and exits, and the unit goes with it.
        var v2 = await unit.ServingPidAsync(allowFailure: true);
        var end = await Vm.RunAsync(
            "end=$((SECONDS+60)); while [ $SECONDS -lt $end ]; do case $(systemctl is-active echo) in inactive|failed) break;; esac; sleep 0.5; done; " +
            "systemctl is-active echo; systemctl show -p MainPID --value echo",
            TimeSpan.FromSeconds(90));
        var lines = end.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var v2Alive = v2 is { } pid && (await Vm.RunAsync($"for i in $(seq 60); do [ -e /proc/{pid} ] || exit 1; sleep 0.5; done")).Succeeded;

        Assert.True(reload.Succeeded, reload.ToString());
        Assert.True(v2 is not null && v2 != v1, $"The reload did not bring a new generation (v1 {v1}, v2 {v2}).");
        Assert.True(lines.Length == 2, end.ToString());
        Assert.True(lines[0] is "inactive" or "failed", $"The unit is {lines[0]}: systemd did not lose the service.");
        Assert.Equal("0", lines[1]);
        Assert.False(v2Alive, $"The new generation (pid {v2}) survived the unit's end.");
    }
}

/// <summary>Where the unit's programs are: this repository's build outputs, which the VM sees at the same paths.</summary>
public sealed record EchoPaths(string Unit, string EchoDirectory, string Cli, string TestServer)
{
    public static EchoPaths Find()
    {
        return new EchoPaths(
            Path.Combine(RepositoryBuild.Root, "samples", "systemd", "echo.service"),
            Path.GetDirectoryName(RepositoryBuild.Built("EchoServer", "EchoServer.dll"))!,
            RepositoryBuild.Built("Switchover.Cli", "switchover.dll"),
            RepositoryBuild.Built("Switchover.TestServer", "Switchover.TestServer.dll"));
    }
}

/// <summary>
/// The sample unit installed in the VM as echo.service (its own text, with /etc/default/echo pointing at the build
/// outputs, and an optional drop-in), started; disposing it stops it and removes what it installed.
/// </summary>
internal sealed class EchoUnit : IAsyncDisposable
{
    private readonly VirtualMachine _vm;

    private EchoUnit(VirtualMachine vm, long since)
    {
        _vm = vm;
        Since = since;
    }

    /// <summary>The VM's clock (epoch seconds) just before the start, for `journalctl --since @...`.</summary>
    public long Since { get; }

    public static async Task<EchoUnit> StartAsync(VirtualMachine vm, EchoPaths paths, string? dropIn = null)
    {
        await vm.WaitForSystemdAsync(TimeSpan.FromMinutes(3));
        var share = vm.HostShareDirectory;
        await File.WriteAllTextAsync(Path.Combine(share, "echo.default"), $"ECHO_DIR={paths.EchoDirectory}\nSWITCHOVER_CLI={paths.Cli}\n");
        // The lab's bounds on a start and a deploy: under TCG on a busy 2-core machine a generation takes 30-150 s from
        // launch to serving (about 1 s on the machine itself), beyond the sample's TimeoutStartSec=90 and --timeout 60s.
        // The sample's own ExecReload= otherwise; a test's drop-in comes after and may replace it.
        var execReload = File.ReadAllLines(paths.Unit).Single(l => l.StartsWith("ExecReload=", StringComparison.Ordinal));
        await File.WriteAllTextAsync(Path.Combine(share, "echo.dropin"),
            $"[Service]\nTimeoutStartSec=280\nExecReload=\n{execReload.Replace("--timeout 60s", "--timeout 240s", StringComparison.Ordinal)}\n" + (dropIn ?? ""));
        var g = VirtualMachine.GuestShareDirectory;
        var install = await vm.RunAsync(
            $"cp {VirtualMachine.Quote(paths.Unit)} /etc/systemd/system/echo.service && cp {g}/echo.default /etc/default/echo && " +
            $"rm -rf /etc/systemd/system/echo.service.d && if [ -s {g}/echo.dropin ]; then mkdir /etc/systemd/system/echo.service.d && " +
            $"cp {g}/echo.dropin /etc/systemd/system/echo.service.d/test.conf; fi && systemctl daemon-reload && date +%s",
            TimeSpan.FromSeconds(60));
        install.EnsureSuccess();
        var unit = new EchoUnit(vm, long.Parse(install.StandardOutput.Trim(), System.Globalization.CultureInfo.InvariantCulture) - 1);
        var start = await vm.RunAsync("systemctl start echo", TimeSpan.FromSeconds(300));
        if (!start.Succeeded)
        {
            var why = await vm.RunAsync("systemctl status --no-pager -l -n 0 echo; journalctl --no-pager -o cat -u echo -n 40; true");
            await unit.DisposeAsync();
            throw new InvalidOperationException($"The sample unit did not start:\n{start}\n{why.StandardOutput}");
        }

        return unit;
    }

    /// <summary>The pid in the answer ("hello PID") of a request to port 8080 over loopback; bounded retries.</summary>
    public async Task<int?> ServingPidAsync(bool allowFailure = false)
    {
        var result = await _vm.RunAsync(
            "for i in $(seq 20); do curl -s --max-time 5 http://127.0.0.1:8080/ && exit 0; sleep 0.5; done; exit 1", TimeSpan.FromSeconds(60));
        if (!result.Succeeded)
        {
            return allowFailure ? null : throw new InvalidOperationException($"Port 8080 does not answer in the VM:\n{result}");
        }

        return int.Parse(result.StandardOutput.Trim().Split(' ')[^1], System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task<int> MainPidAsync() =>
        int.Parse((await _vm.RunAsync("systemctl show -p MainPID --value echo")).EnsureSuccess().StandardOutput.Trim(), System.Globalization.CultureInfo.InvariantCulture);

    public async Task<string> ActiveStateAsync() => (await _vm.RunAsync("systemctl is-active echo; true")).StandardOutput.Trim();

    public async Task<string> JournalAsync() =>
        (await _vm.RunAsync($"journalctl --no-pager -o cat -u echo --since @{Since}", TimeSpan.FromSeconds(60))).EnsureSuccess().StandardOutput;

    public async ValueTask DisposeAsync()
    {
        await _vm.RunAsync(
            "systemctl stop echo; systemctl reset-failed echo 2>/dev/null; rm -rf /etc/systemd/system/echo.service.d /etc/systemd/system/echo.service /etc/default/echo; " +
            "systemctl daemon-reload; true",
            TimeSpan.FromSeconds(120));
    }
}

/// <summary>What the client in the VM's namespace `c` saw during the reloads.</summary>
public sealed record LoadResult(int Requests, int KeepAliveRequests, IReadOnlyList<string> Failures, IReadOnlyDictionary<string, int> States, IReadOnlySet<int> PidsSeen, string Raw)
{
    public static LoadResult Parse(string output)
    {
        int requests = 0, keepAlive = 0;
        var failures = new List<string>();
        var states = new Dictionary<string, int>();
        var pids = new HashSet<int>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(' ', 2);
            switch (parts[0])
            {
                case "new":
                    requests++;
                    var m = Regex.Match(parts[1], @"^hello (\d+) 200$");
                    if (m.Success)
                    {
                        pids.Add(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        failures.Add(line);
                    }

                    break;
                case "ka":
                    keepAlive++;
                    if (parts[1] != "200")
                    {
                        failures.Add(line);
                    }

                    break;
                case "state":
                    states[parts[1]] = states.GetValueOrDefault(parts[1]) + 1;
                    break;
                default:
                    failures.Add("unexpected line: " + line);
                    break;
            }
        }

        return new LoadResult(requests, keepAlive, failures, states, pids, output);
    }

    public override string ToString() =>
        $"{Requests} new-connection and {KeepAliveRequests} keep-alive requests, {Failures.Count} failed " +
        $"({string.Join("; ", Failures.Take(10))}); is-active samples: {string.Join(", ", States.Select(s => $"{s.Key} x{s.Value}"))}; " +
        $"pids seen: {string.Join(", ", PidsSeen)}";
}

public sealed record GenerationSeen(string Step, int Pid, int MainPid, string ActiveState);

public sealed record AfterStop(string ActiveState, string Result, string Tables, bool StateDirectoryExists, string Processes);

public sealed record ReloadRun(
    IReadOnlyList<GenerationSeen> Generations, IReadOnlyList<long> GenerationIds, LoadResult Load, VmCommandResult Stop, AfterStop AfterStop, string Journal);

/// <summary>The systemd VM of <see cref="SystemdHandoffTests"/>, and the one reload run of the sample unit they share.</summary>
public sealed class SystemdHandoffFixture : VmFixture
{
    private const string Client = "ip netns exec swc";
    private readonly Lazy<Task<ReloadRun>> _run;
    private EchoPaths? _paths;

    public SystemdHandoffFixture()
        : base(VmInit.Systemd) =>
        _run = new Lazy<Task<ReloadRun>>(RunAsync);

    public EchoPaths Paths => _paths ??= EchoPaths.Find();

    /// <summary>
    /// v1 by `systemctl start`, then three `systemctl reload`s (v2, v3, v4) while a client in another network namespace of
    /// the VM sends requests (a new connection each, and keep-alive), then `systemctl stop`. Run once; the tests read it.
    /// </summary>
    public Task<ReloadRun> ReloadRunAsync() => _run.Value;

    private async Task<ReloadRun> RunAsync()
    {
        var vm = Vm;
        var watch = Stopwatch.StartNew();
        // The client: namespace swc, 192.0.2.2 over a veth to the VM's root namespace (192.0.2.1), where the unit runs.
        (await vm.RunAsync(
            "ip netns add swc && ip link add swh type veth peer name swv netns swc && ip addr add 192.0.2.1/24 dev swh && ip link set swh up && " +
            $"{Client} ip addr add 192.0.2.2/24 dev swv && {Client} ip link set swv up && {Client} ip link set lo up")).EnsureSuccess();
        try
        {
            var generations = new List<GenerationSeen>();
            VmCommandResult stop;
            AfterStop afterStop;
            LoadResult load;
            string journal;
            var unit = await EchoUnit.StartAsync(vm, Paths);
            try
            {
                generations.Add(await SeenAsync(unit, "systemctl start"));
                Console.WriteLine($"vmlab: echo v1 serving after {watch.Elapsed.TotalSeconds:0.0} s");

                // Bounded: until the stop file appears, or 720 s. Each round: one request on a new connection (its body
                // names the pid), ten on one keep-alive connection, and one sample of `systemctl is-active`.
                var loadTask = vm.RunAsync(
                    "rm -f /tmp/swc.stop; end=$((SECONDS+720)); while [ ! -e /tmp/swc.stop ] && [ $SECONDS -lt $end ]; do " +
                    $"  r=$({Client} curl -s --max-time 5 -w ' %{{http_code}}' http://192.0.2.1:8080/ | tr -d '\\n'); echo \"new $r\"; " +
                    $"  {Client} curl -s --max-time 10 -w 'ka %{{http_code}}\\n'" + string.Concat(Enumerable.Repeat(" -o /dev/null http://192.0.2.1:8080/", 10)) + "; " +
                    "  echo \"state $(systemctl is-active echo)\"; sleep 0.5; " +
                    "done; rm -f /tmp/swc.stop",
                    TimeSpan.FromSeconds(750));
                await Task.Delay(TimeSpan.FromSeconds(2));
                try
                {
                    for (var i = 2; i <= 4; i++)
                    {
                        var reload = await vm.RunAsync("systemctl reload echo", TimeSpan.FromSeconds(300));
                        if (!reload.Succeeded)
                        {
                            var why = await vm.RunAsync("systemctl status --no-pager -l -n 0 echo; journalctl --no-pager -o cat -u echo -n 40; true");
                            Assert.Fail($"Reload {i - 1} failed:\n{reload}\n{why.StandardOutput}");
                        }

                        generations.Add(await SeenAsync(unit, $"reload {i - 1}"));
                        Console.WriteLine($"vmlab: echo v{i} serving after {watch.Elapsed.TotalSeconds:0.0} s");
                    }

                    // A few rounds against v4 alone, while v3 drains.
                    await Task.Delay(TimeSpan.FromSeconds(3));
                }
                finally
                {
                    await vm.RunAsync("touch /tmp/swc.stop");
                    var loadResult = await loadTask;
                    load = LoadResult.Parse(loadResult.StandardOutput);
                }

                stop = await vm.RunAsync("systemctl stop echo", TimeSpan.FromSeconds(120));
                var after = (await vm.RunAsync(
                    "systemctl is-active echo; systemctl show -p Result --value echo; echo ---; nft list tables; echo ---; " +
                    "[ -e /run/switchover/echo ] && echo exists || echo gone; echo ---; " +
                    "pgrep -a -f 'EchoServer.dll|switchover.dll deploy' || true", TimeSpan.FromSeconds(60))).StandardOutput.Split("---\n");
                var head = after[0].Split('\n', StringSplitOptions.RemoveEmptyEntries);
                afterStop = new AfterStop(head[0], head.ElementAtOrDefault(1) ?? "", after[1], after[2].Trim() == "exists", after[3].Trim());
                journal = await unit.JournalAsync();
                Console.WriteLine($"vmlab: reload run done after {watch.Elapsed.TotalSeconds:0.0} s: {load}");
            }
            finally
            {
                await unit.DisposeAsync();
            }

            var ids = Regex.Matches(journal, @"Generation (\d+) of namespace 'echo' registered \(pid (\d+)\)")
                .Select(m => (Id: long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Pid: int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)))
                .Where(g => generations.Any(s => s.Pid == g.Pid))
                .Select(g => g.Id)
                .ToList();
            return new ReloadRun(generations, ids, load, stop, afterStop, journal);
        }
        finally
        {
            await vm.RunAsync("ip netns del swc; ip link del swh 2>/dev/null; rm -f /tmp/swc.stop; true");
        }
    }

    private static async Task<GenerationSeen> SeenAsync(EchoUnit unit, string step) =>
        new(step, (await unit.ServingPidAsync())!.Value, await unit.MainPidAsync(), await unit.ActiveStateAsync());
}
