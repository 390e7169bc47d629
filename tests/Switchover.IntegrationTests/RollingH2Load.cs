using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// A rolling deploy under h2load: one h2load run per handoff, because h2load neither retries nor reconnects once its
/// connections are told to go away (every run ends at the handoff it spans, and the next run starts on the new generation).
/// </summary>
/// <remarks>
/// h2load runs for its whole duration even once its connections are gone, so the duration only has to outlast the
/// start of the next generation on a busy machine: 15 s, as 10 s was once too short (a run whose duration ends first has
/// no GOAWAY to show, and its streams in flight at the end count as started and not done).
/// </remarks>
internal static class RollingH2Load
{
    private static readonly TimeSpan LoadBeforeHandoff = TimeSpan.FromSeconds(1.5);

    /// <summary>
    /// Deploys <paramref name="handoffs"/> generations after <paramref name="first"/>, each while an h2load run against
    /// <paramref name="targetFor"/>(handoff number) is under way; returns every run's count. Each superseded generation
    /// must drain and exit 0.
    /// </summary>
    public static async Task<IReadOnlyList<H2LoadRun>> RunAsync(
        SwitchoverService service,
        NetworkNamespace client,
        LaunchedGeneration first,
        int handoffs,
        Func<int, Uri> targetFor,
        H2LoadOptions options,
        IEnumerable<string> generationArguments,
        ITestOutputHelper output,
        CancellationToken cancellationToken)
    {
        var arguments = generationArguments.ToArray();
        var current = first;
        var runs = new List<H2LoadRun>();
        for (var handoff = 1; handoff <= handoffs; handoff++)
        {
            var target = targetFor(handoff);
            var h2load = H2Load.Start(client, target, options);
            await using (h2load)
            {
                await h2load.WaitForOutputAsync("Main benchmark duration is started", TimeSpan.FromSeconds(20), cancellationToken);
                await Task.Delay(LoadBeforeHandoff, cancellationToken);
                var next = await service.DeployAsync($"v{handoff + 1}", TimeSpan.FromSeconds(60), cancellationToken, arguments);
                var exit = await current.Process.Exited.WaitAsync(TimeSpan.FromSeconds(40), cancellationToken);
                Assert.True(exit == 0, $"Generation {current.Text} exited with {exit}:\n{current.Process.Output}");
                Assert.Contains("drained in", current.Process.Output, StringComparison.Ordinal);
                current = next;

                var h2loadExit = await h2load.Exited.WaitAsync(options.Duration + TimeSpan.FromSeconds(30), cancellationToken);
                var result = H2LoadResult.Parse(h2load.Output);
                // h2load prints "Process Request Failure" once per connection whose next request it may not open
                // because a GOAWAY arrived (it neither counts these nor reconnects).
                var goAways = h2load.OutputLines.Count(l => l.StartsWith("Process Request Failure", StringComparison.Ordinal));
                output.WriteLine($"handoff {handoff} ({target}): {result}; h2load exit {h2loadExit}; "
                                 + $"{goAways} of {options.Connections} connection(s) told to go away");
                if (!result.Clean || result.Total == 0 || goAways != options.Connections)
                {
                    output.WriteLine(h2load.Output);
                }


                runs.Add(new H2LoadRun(handoff, target, result, goAways));
            }
        }

        return runs;
    }
}

/// <summary>One h2load run across one handoff: its count, and how many of its connections were told to go away.</summary>
internal sealed record H2LoadRun(int Handoff, Uri Target, H2LoadResult Result, int GoAways)
{
    /// <summary>Asserts that every run lost nothing, then that every connection of every run moved by GOAWAY.</summary>
    public static void AssertCleanAndMoved(IReadOnlyList<H2LoadRun> runs, H2LoadOptions options)
    {
        var total = H2LoadResult.Sum([.. runs.Select(r => r.Result)]);
        Assert.All(runs, run => Assert.True(run.Result.Succeeded > 0, $"h2load got no response in handoff {run.Handoff}: {run.Result}"));
        Assert.Equal(0, total.Failed);
        Assert.Equal(0, total.Errored);
        Assert.Equal(0, total.TimedOut);
        Assert.Equal(0, total.Abandoned);
        Assert.All(runs, run => Assert.True(run.GoAways == options.Connections,
            $"Only {run.GoAways} of {options.Connections} h2load connections got a GOAWAY in handoff {run.Handoff}: the run did not "
            + "span the handoff (did its duration end before the new generation took over?)."));
    }
}
