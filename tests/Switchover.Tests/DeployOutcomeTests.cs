using Microsoft.Extensions.Logging;
using Switchover.Hosting;
using Switchover.State;

namespace Switchover.Tests;

public sealed class DeployOutcomeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-outcome-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string OutcomePath => Path.Combine(_root, ".deploy-1-2.json");

    [Fact]
    public void The_recent_log_keeps_the_newest_lines_and_folds_a_retry_loop_into_one()
    {
        var log = new RecentLog { Capacity = 3 };
        log.Add(LogLevel.Information, "Lifetime", 0, "Application started.", null, "Application started.");
        log.Add(LogLevel.Information, "Lifetime", 0, "Hosting environment: Production", null, "Hosting environment: {EnvName}");
        for (var i = 0; i < 5; i++)
        {
            log.Add(LogLevel.Error, "HealthChecks", 103, $"Health check knob completed after {i}ms", null, "Health check {Name} completed after {Ms}ms");
        }

        log.Add(LogLevel.Critical, "Switchover.Hosting.HandoffService", 6, "did not take over", new TimeoutException("Not ready"));

        Assert.Equal(
        [
            "info: Lifetime[0] Hosting environment: Production",
            "fail: HealthChecks[103] Health check knob completed after 4ms (logged 5 times in a row; this is the last)",
            "crit: Switchover.Hosting.HandoffService[6] did not take over (TimeoutException: Not ready)",
        ], log.Lines);
    }

    [Fact]
    public void A_generation_not_launched_by_deploy_writes_no_outcome()
    {
        var log = new RecentLog();
        using var outcome = new DeployOutcome(log, path: null);

        log.Add(LogLevel.Information, "x", 1, "hello", null);
        outcome.Failed(OutcomeKind.Unhealthy, "no");

        Assert.False(outcome.IsRequested);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Fact]
    public void While_starting_the_outcome_file_carries_the_log_so_far_and_the_first_final_outcome_stands()
    {
        var log = new RecentLog();
        using var outcome = new DeployOutcome(log, OutcomePath);
        Assert.Equal(OutcomeKind.Starting, OutcomeFile.TryRead(OutcomePath)!.Kind);

        log.Add(LogLevel.Information, "x", 1, "bound", null);
        outcome.Registered(NamespaceName.Parse("shop"), 7);
        var starting = OutcomeFile.TryRead(OutcomePath)!;
        Assert.Equal((OutcomeKind.Starting, "shop", 7L, Environment.ProcessId), (starting.Kind, starting.Namespace, starting.GenerationId!.Value, starting.Pid));
        Assert.Equal(["info: x[1] bound"], starting.LogLines);

        outcome.Failed(OutcomeKind.Unhealthy, "Not ready after 60 s");
        log.Add(LogLevel.Information, "x", 2, "Application is shutting down...", null);
        outcome.TookOver(12);

        var final = OutcomeFile.TryRead(OutcomePath)!;
        Assert.Equal((OutcomeKind.Unhealthy, "Not ready after 60 s"), (final.Kind, final.Reason));
        Assert.Equal(["info: x[1] bound"], final.LogLines);
        Assert.Null(outcome.WriteError);
    }

    [Fact]
    public void An_outcome_that_cannot_be_written_is_reported_not_thrown()
    {
        var log = new RecentLog();
        using var outcome = new DeployOutcome(log, "/proc/switchover-outcome.json");

        outcome.TookOver(5);

        Assert.Contains("/proc/switchover-outcome.json", outcome.WriteError, StringComparison.Ordinal);
    }

    [Fact]
    public void Outcome_files_of_deploys_that_are_gone_are_removed_and_those_of_running_ones_kept()
    {
        var running = ProcessIdentity.Current;
        var mine = OutcomeFile.PathFor(_root, running);
        var gone = OutcomeFile.PathFor(_root, new ProcessIdentity(running.Pid, running.StartTime + 1));
        File.WriteAllText(mine, "{}");
        File.WriteAllText(gone, "{}");
        File.WriteAllText(gone + ".tmp", "{}");
        Directory.CreateDirectory(Path.Combine(_root, "shop"));

        var removed = OutcomeFile.RemoveAbandoned(_root);

        Assert.Equal(2, removed);
        Assert.Equal([".deploy-" + running.Pid + "-" + running.StartTime + ".json", "shop"],
            Directory.EnumerateFileSystemEntries(_root).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(".deploy-12-345.json", 12, 345UL)]
    [InlineData(".deploy-12-345.json.tmp", 12, 345UL)]
    [InlineData(".deploy-12.json", null, null)]
    [InlineData("state.json", null, null)]
    [InlineData(".deploy-x-1.json", null, null)]
    public void Outcome_file_names_say_which_deploy_owns_them(string name, int? pid, ulong? startTime)
    {
        var owner = OutcomeFile.ParseOwner(name);
        Assert.Equal(pid, owner?.Pid);
        Assert.Equal(startTime, owner?.StartTime);
    }
}
