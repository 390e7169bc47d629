using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

/// <summary>
/// <c>switchover deploy</c> launching real generations of the test server in the lab's server namespace. The CLI is
/// started as a lab process, not with <see cref="SwitchoverService.CliAsync"/>: the generation deploy launches
/// inherits deploy's standard output, so reading that output to its end would wait for the generation to exit.
/// </summary>
public sealed partial class DeployCommandTests(ITestOutputHelper output) : TestBase(output)
{
    private static readonly TimeSpan DeployTimeout = TimeSpan.FromSeconds(90);
    private readonly List<int> _launched = [];

    private SwitchoverService App { get; set; } = null!;

    /// <summary>The test server's service, and the cleanup of the generations deploy launched (disposed before it).</summary>
    private void StartApp()
    {
        App = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort));
        Track(new Cleanup(async () =>
        {
            foreach (var pid in _launched.ToList())
            {
                await StopAsync(pid);
            }
        }));
    }

    private IPEndPoint Public => new(Lab.ServerV4, PublicPort);

    /// <summary>The test server's command line as a deploy passes it on: no namespace, deploy's --namespace gives it.</summary>
    private static string[] Generation(string text, params string[] knobs) =>
        ["dotnet", Artifacts.TestServer, "--urls", $"http://*:{PublicPort.ToString(CultureInfo.InvariantCulture)}", $"--Text={text}",
         "--contentRoot", Path.GetDirectoryName(Artifacts.TestServer)!, .. knobs];

    private async Task<(int ExitCode, LabProcess Deploy)> DeployAsync(params string[] arguments)
    {
        var deploy = Lab.Server.StartProcess("dotnet", [Artifacts.Cli, "deploy", .. arguments]);
        var exitCode = await ExitsWithinAsync(deploy, DeployTimeout);
        Output.WriteLine($"--- switchover deploy exited {exitCode}:\n{deploy.Output}");
        return (exitCode, deploy);
    }

    private int TookOver(LabProcess deploy, long generation)
    {
        var match = TookOverLine().Match(deploy.Output);
        Assert.True(match.Success, $"deploy printed no takeover line:\n{deploy.Output}");
        Assert.Equal(generation, long.Parse(match.Groups["id"].Value, CultureInfo.InvariantCulture));
        Assert.Equal(App.Name, match.Groups["ns"].Value);
        Assert.InRange(double.Parse(match.Groups["ms"].Value, CultureInfo.InvariantCulture), 1, DeployTimeout.TotalMilliseconds);
        var pid = int.Parse(match.Groups["pid"].Value, CultureInfo.InvariantCulture);
        _launched.Add(pid);
        return pid;
    }

    [Fact(Timeout = 240_000)]
    public async Task Deploy_launches_the_next_generation_reports_its_takeover_and_the_generation_serves_on_after_deploy_exited()
    {
        StartApp();
        var v1 = await App.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromMinutes(2)), Token);
        await Task.Delay(500, Token);

        var (exitCode, deploy) = await DeployAsync(["--namespace", App.Name, "--timeout", "60s", "--", .. Generation("v2")]);

        Assert.Equal(0, exitCode);
        var v2 = TookOver(deploy, generation: 2);
        Assert.True(deploy.HasExited);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(30)));
        await Task.Delay(500, Token);
        var result = await load.StopAsync(Token);
        AssertNoFailures(result);
        Assert.Contains($"v2 {v2}\n", result.Bodies.Keys);
        Assert.Equal($"v2 {v2}", (await GetAsync(Lab.Client, Public, "/", Token)).Body.Trim());
        Assert.Equal(v2, App.ReadState()!.Active!.Pid);
        Assert.Empty(Directory.GetFiles(StateStore.DefaultRoot, ".deploy-*"));

        // Its logs went where deploy's went, also after deploy exited (under systemd: the journal).
        await StopAsync(v2);
        await EventuallyAsync(() => deploy.Output.Contains($"Generation 2 left namespace '{App.Name}'; it was the last", StringComparison.Ordinal),
            "the generation's last log line in deploy's output stream");
        Assert.Null(await App.TableAsync(Token));
        Assert.False(Directory.Exists(App.StateDirectory));
    }

    [Fact(Timeout = 240_000)]
    public async Task A_deploy_whose_generation_is_unhealthy_fails_with_exit_code_4_the_reason_and_its_log_lines_while_the_old_generation_serves_on()
    {
        StartApp();
        var v1 = await App.DeployAsync("v1", TakeoverTimeout, Token);

        // No --namespace: deploy learns it from the generation, whose command line names it.
        var (exitCode, deploy) = await DeployAsync(
            ["--timeout", "60s", "--", .. Generation("v2", "--FailHealth=true", "--Switchover:ReadinessTimeout=00:00:03", $"--Switchover:Namespace={App.Name}")]);

        Assert.Equal(4, exitCode);
        Assert.Matches($@"switchover: generation 2 \(pid \d+\) of namespace '{App.Name}' did not take over: unhealthy: Not ready after 3 s \(Switchover:ReadinessTimeout\): health checks report Unhealthy: knob=Unhealthy \(FailHealth is set\)", deploy.Output);
        Assert.Contains($"switchover: generation 1 (pid {v1.Process.Pid}) keeps serving.", deploy.Output, StringComparison.Ordinal);
        Assert.Matches(@"switchover: its last log lines:\n(  .*\n)*  crit: Switchover\.Hosting\.HandoffService\[6\] Switchover: this generation did not take over", deploy.Output);
        Assert.Equal($"v1 {v1.Process.Pid}", (await GetAsync(Lab.Client, Public, "/", Token)).Body.Trim());
        Assert.Equal(v1.Process.Pid, App.ReadState()!.Active!.Pid);
        Assert.Single(App.ReadState()!.Generations);
        Assert.False(v1.Process.HasExited);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_deploy_whose_generation_crashes_fails_with_exit_code_5_and_its_signal_while_the_old_generation_serves_on()
    {
        StartApp();
        var v1 = await App.DeployAsync("v1", TakeoverTimeout, Token);

        var (exitCode, deploy) = await DeployAsync(["--namespace", App.Name, "--json", "--", .. Generation("v2", "--CrashAfterMs=0")]);

        Assert.Equal(5, exitCode);
        using var json = JsonDocument.Parse(deploy.OutputLines.Last(l => l.StartsWith("{\"result\":", StringComparison.Ordinal)));
        var report = json.RootElement;
        Assert.Equal("crashed", report.GetProperty("result").GetString());
        Assert.Equal(5, report.GetProperty("exitCode").GetInt32());
        Assert.Equal(137, report.GetProperty("childExitCode").GetInt32());
        Assert.Equal(9, report.GetProperty("childSignal").GetInt32());
        Assert.Equal(App.Name, report.GetProperty("namespace").GetString());
        Assert.StartsWith("it was killed by signal 9 (SIGKILL", report.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Equal(v1.Process.Pid, report.GetProperty("serving").GetProperty("pid").GetInt32());
        Assert.Contains(report.GetProperty("logLines").EnumerateArray(), l => l.GetString()!.Contains("Application started", StringComparison.Ordinal));
        Assert.Equal($"v1 {v1.Process.Pid}", (await GetAsync(Lab.Client, Public, "/", Token)).Body.Trim());
        Assert.Equal(v1.Process.Pid, App.ReadState()!.Active!.Pid);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_deploy_that_waits_too_long_for_the_namespace_lock_fails_with_exit_code_6()
    {
        StartApp();
        var v1 = await App.DeployAsync("v1", TakeoverTimeout, Token);

        // Another deploy holds the lock (the serving generation does not need it).
        var (exitCode, deploy) = await HoldingTheLockAsync(() => DeployAsync(
            ["--namespace", App.Name, "--", .. Generation("v2", "--Switchover:LockTimeout=00:00:02")]));

        Assert.Equal(6, exitCode);
        Assert.Contains("did not take over: lock timeout: Timed out after 2 s waiting for the namespace lock", deploy.Output, StringComparison.Ordinal);
        Assert.Equal($"v1 {v1.Process.Pid}", (await GetAsync(Lab.Client, Public, "/", Token)).Body.Trim());
    }

    private async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"Not seen within 10 s: {what}.");
            await Task.Delay(100, Token);
        }
    }

    private async Task<T> HoldingTheLockAsync<T>(Func<Task<T>> action)
    {
        using var held = await App.Store.LockAsync(TimeSpan.FromSeconds(5), Token);
        return await action();
    }

    /// <summary>Stops a generation deploy launched (the lab did not start it, so its own cleanup would not).</summary>
    private async Task StopAsync(int pid)
    {
        _launched.Remove(pid);
        ProcessIdentity.Read(pid)?.Signal(Signals.Terminate);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(40);
        while (ProcessIdentity.Read(pid) is { } process && process.IsAlive())
        {
            Assert.True(DateTime.UtcNow < deadline, $"generation pid {pid} did not exit within 40 s of SIGTERM");
            await Task.Delay(100, Token);
        }
    }

    private sealed class Cleanup(Func<Task> action) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await action();
    }

    [GeneratedRegex(@"generation (?<id>\d+) \(pid (?<pid>\d+)\) of namespace '(?<ns>[a-z0-9_-]+)' took over: launch to serving (?<ms>\d+) ms")]
    private static partial Regex TookOverLine();
}
