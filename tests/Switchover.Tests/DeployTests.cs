using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Switchover.Cli;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>
/// <c>switchover deploy</c> driving real child processes (sh) that play a generation: they write the outcome file
/// deploy names in their environment, crash, or hang. No root needed; the real generations are in the integration tests.
/// </summary>
[Collection(nameof(NotifySocketTestGroup))]
public sealed class DeployTests : IDisposable
{
    private static readonly NamespaceName Shop = NamespaceName.Parse("shop");
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-deploy-").FullName;
    private readonly string _scratch = Directory.CreateTempSubdirectory("switchover-deploy-scratch-").FullName;
    private readonly List<int> _children = [];

    public void Dispose()
    {
        foreach (var pid in _children)
        {
            try
            {
                Process.GetProcessById(pid).Kill();
            }
            catch (ArgumentException)
            {
                // Gone already.
            }
        }

        Directory.Delete(_root, recursive: true);
        Directory.Delete(_scratch, recursive: true);
    }

    /// <summary>A shell command that puts <paramref name="outcome"/> in place as the generation would (temporary file, rename).</summary>
    private string Writes(GenerationOutcome outcome)
    {
        var template = Path.Combine(_scratch, Guid.NewGuid().ToString("N") + ".json");
        OutcomeFile.Write(template, outcome);
        return $"cp {template} \"$SWITCHOVER_DEPLOY_OUTCOME.tmp\" && mv \"$SWITCHOVER_DEPLOY_OUTCOME.tmp\" \"$SWITCHOVER_DEPLOY_OUTCOME\"";
    }

    private static GenerationOutcome Outcome(OutcomeKind kind, string? reason = null, params string[] lines) =>
        new(kind, 0, "shop", 7, reason, kind == OutcomeKind.TookOver ? 512 : null, lines, DateTimeOffset.UtcNow);

    private Deployment Deploy(string script, TimeSpan? timeout = null, NamespaceName? name = null) =>
        new(["sh", "-c", script], name, timeout ?? TimeSpan.FromSeconds(20), _root) { ExitGrace = TimeSpan.FromSeconds(5), StopGrace = TimeSpan.FromSeconds(5) };

    private DeployReport Track(DeployReport report)
    {
        if (report.Pid is { } pid)
        {
            _children.Add(pid);
        }

        return report;
    }

    /// <summary>Records this test process as the active generation 6 of namespace shop: it plays the generation that serves.</summary>
    private async Task<ProcessIdentity> ServingGenerationAsync()
    {
        var serving = ProcessIdentity.Current;
        using var held = await new StateStore(_root, Shop).LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None);
        held.Write(NamespaceState.Empty(Shop).With(new GenerationRecord(6, serving.Pid, serving.StartTime, GenerationState.Active,
            DateTimeOffset.UtcNow, [new PortMapping(8080, 40006)], Steering.Tproxy)) with { LastGenerationId = 6 });
        return serving;
    }

    private static bool Alive(int pid) => ProcessIdentity.Read(pid) is { } p && p.IsAlive();

    [Fact(Timeout = 30000)]
    public async Task A_generation_that_reports_its_takeover_gives_exit_code_0_with_its_generation_pid_and_launch_to_serving_time()
    {
        var report = Track(await Deploy($"{Writes(Outcome(OutcomeKind.TookOver))}; exec sleep 20").RunAsync(CancellationToken.None));

        Assert.Equal((DeployResult.TookOver, 0, "shop", 7L, 512.0), (report.Result, report.ExitCode, report.Namespace, report.GenerationId!.Value, report.LaunchToServingMs!.Value));
        Assert.Equal($"generation 7 (pid {report.Pid}) of namespace 'shop' took over: launch to serving 512 ms\n", report.Render());
        Assert.True(Alive(report.Pid!.Value), "the generation must run on after deploy returned");
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Fact(Timeout = 30000)]
    public async Task A_generation_that_reports_it_is_unhealthy_fails_the_deploy_with_exit_code_4_its_reason_and_its_last_log_lines()
    {
        var outcome = Outcome(OutcomeKind.Unhealthy, "Not ready after 3 s (Switchover:ReadinessTimeout): health checks report Unhealthy",
            "info: Microsoft.Hosting.Lifetime[0] Application started.", "crit: Switchover.Hosting.HandoffService[6] did not take over");

        var report = Track(await Deploy($"{Writes(outcome)}; exit 1").RunAsync(CancellationToken.None));

        Assert.Equal((DeployResult.Unhealthy, 4, 1), (report.Result, report.ExitCode, report.ChildExitCode!.Value));
        Assert.Equal(outcome.LogLines, report.LogLines);
        var text = report.Render();
        Assert.Contains($"generation 7 (pid {report.Pid}) of namespace 'shop' did not take over: unhealthy: Not ready after 3 s", text, StringComparison.Ordinal);
        Assert.Contains("  crit: Switchover.Hosting.HandoffService[6] did not take over\n", text, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Fact(Timeout = 30000)]
    public async Task A_generation_killed_before_it_took_over_is_a_crash_with_its_signal_and_the_lines_it_logged()
    {
        var starting = Outcome(OutcomeKind.Starting, null, "info: Microsoft.Hosting.Lifetime[14] Now listening on: http://[::]:8080");

        var report = Track(await Deploy($"{Writes(starting)}; kill -9 $$").RunAsync(CancellationToken.None));

        Assert.Equal((DeployResult.Crashed, 5, 137, 9), (report.Result, report.ExitCode, report.ChildExitCode!.Value, report.ChildSignal!.Value));
        Assert.Equal("it was killed by signal 9 (SIGKILL; exit status 137) before it took over", report.Reason);
        Assert.Equal(starting.LogLines, report.LogLines);
    }

    [Theory(Timeout = 30000)]
    [InlineData(OutcomeKind.LockTimeout, "LockTimeout", 6)]
    [InlineData(OutcomeKind.Superseded, "Superseded", 7)]
    [InlineData(OutcomeKind.StartFailed, "StartFailed", 8)]
    [InlineData(OutcomeKind.Stopped, "Crashed", 5)]
    public async Task Each_failure_the_generation_reports_has_its_own_exit_code(OutcomeKind kind, string result, int exitCode)
    {
        var report = Track(await Deploy($"{Writes(Outcome(kind, "because"))}; exit 1").RunAsync(CancellationToken.None));

        Assert.Equal((result, exitCode, "because"), (report.Result.ToString(), report.ExitCode, report.Reason));
    }

    [Fact(Timeout = 30000)]
    public async Task A_generation_that_neither_takes_over_nor_fails_within_the_timeout_is_stopped()
    {
        var report = Track(await Deploy("exec sleep 30", TimeSpan.FromMilliseconds(500)).RunAsync(CancellationToken.None));

        Assert.Equal((DeployResult.TimedOut, 9), (report.Result, report.ExitCode));
        Assert.Equal(128 + 15, report.ChildExitCode);
        Assert.False(Alive(report.Pid!.Value));
    }

    [Fact(Timeout = 30000)]
    public async Task A_command_that_cannot_be_started_is_a_start_failure()
    {
        var report = await new Deployment(["/nonexistent/app"], Shop, TimeSpan.FromSeconds(5), _root).RunAsync(CancellationToken.None);

        Assert.Equal((DeployResult.StartFailed, 8, null), (report.Result, report.ExitCode, report.Pid));
        Assert.Contains("'/nonexistent/app' could not be started (No such file or directory)", report.Reason, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30000)]
    public async Task The_generation_gets_the_namespace_of_the_deploy_in_its_environment()
    {
        var report = Track(await Deploy("printf '%s' \"$Switchover__Namespace\" > " + Path.Combine(_scratch, "ns") + "; exit 3", name: Shop)
            .RunAsync(CancellationToken.None));

        Assert.Equal((DeployResult.Crashed, 3), (report.Result, report.ChildExitCode!.Value));
        Assert.Equal("shop", File.ReadAllText(Path.Combine(_scratch, "ns")));
    }

    [Fact(Timeout = 30000)]
    public async Task A_reload_whose_generation_crashed_is_ended_by_deploy_with_READY_and_the_pid_that_still_serves()
    {
        var serving = await ServingGenerationAsync();
        using var systemd = new NotifySocket();
        var report = Track(await NotifySocket.WithNotifySocketAsync(systemd.Path, () => Deploy("kill -9 $$", name: Shop).RunAsync(CancellationToken.None)));

        Assert.Equal(new ServingGeneration(6, serving.Pid), report.Serving);
        var message = Assert.Single(systemd.Received());
        Assert.Equal(
            [KeyValuePair.Create("READY", "1"), KeyValuePair.Create("MAINPID", serving.Pid.ToString(CultureInfo.InvariantCulture)),
             // Under a service manager deploy forks the generation away (the manager adopts it), so its exit status is not deploy's.
             KeyValuePair.Create("STATUS", "reload failed: crashed: it exited before it took over (its exit status went to the service manager that adopted it: see the unit's journal) (it never reported to deploy: is it an app with UseSwitchover()?)")],
            NotifySocket.Fields(message));
        Assert.Contains("generation 6 (pid " + serving.Pid + ") keeps serving.", report.Render(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 30000)]
    public async Task A_generation_that_reported_its_own_failure_is_left_to_tell_systemd_itself()
    {
        await ServingGenerationAsync();
        using var systemd = new NotifySocket();
        var report = Track(await NotifySocket.WithNotifySocketAsync(systemd.Path,
            () => Deploy($"{Writes(Outcome(OutcomeKind.Unhealthy, "no"))}; exit 1", name: Shop).RunAsync(CancellationToken.None)));

        Assert.Equal(DeployResult.Unhealthy, report.Result);
        Assert.NotNull(report.Serving);
        Assert.Empty(systemd.Received());
    }

    [Fact(Timeout = 30000)]
    public async Task With_json_the_result_is_one_line_of_json_and_the_exit_code_is_the_deploys()
    {
        var output = new StringWriter();
        var code = await SwitchoverCli.RunAsync(
            ["deploy", "--json", "--state-dir", _root, "--timeout", "20s", "--", "sh", "-c", $"{Writes(Outcome(OutcomeKind.Superseded, "newer"))}; exit 1"],
            new System.CommandLine.InvocationConfiguration { Output = output, Error = TextWriter.Null });

        Assert.Equal(7, code);
        var line = Assert.Single(output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        using var json = JsonDocument.Parse(line);
        Assert.Equal("superseded", json.RootElement.GetProperty("result").GetString());
        Assert.Equal(7, json.RootElement.GetProperty("exitCode").GetInt32());
        Assert.Equal("newer", json.RootElement.GetProperty("reason").GetString());
        Assert.Equal(1, json.RootElement.GetProperty("childExitCode").GetInt32());
    }

    [Theory(Timeout = 10000)]
    [InlineData("deploy")]
    [InlineData("deploy", "--timeout", "soon", "--", "true")]
    [InlineData("deploy", "--timeout", "0s", "--", "true")]
    [InlineData("deploy", "--namespace", "Bad Name", "--", "true")]
    public async Task Usage_errors_exit_with_code_2_and_start_nothing(params string[] args)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync([.. args.Take(1), "--state-dir", _root, .. args.Skip(1)],
            new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(2, code);
        Assert.StartsWith("switchover: ", error.ToString(), StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Theory]
    [InlineData("90s", 90_000)]
    [InlineData("2m", 120_000)]
    [InlineData("500ms", 500)]
    [InlineData("1.5h", 5_400_000)]
    [InlineData("45", 45_000)]
    [InlineData("00:01:30", 90_000)]
    public void Timeouts_read_as_people_write_them(string text, double milliseconds) =>
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), CommonOptions.TryParseDuration(text));
}
