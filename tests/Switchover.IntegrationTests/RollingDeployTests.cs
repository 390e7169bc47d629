using System.Globalization;
using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

public sealed class RollingDeployTests(ITestOutputHelper output) : TestBase(output)
{
    private const int NewGenerations = 5;

    [Theory(Timeout = 240_000)]
    [InlineData(ConnectionMode.KeepAlive)]
    [InlineData(ConnectionMode.NewConnectionPerRequest)]
    public async Task Rolling_deploy_under_load_fails_no_request_and_moves_every_client_to_the_newest_version(ConnectionMode mode)
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var generations = new List<LaunchedGeneration> { v1 };
        await using var load = HttpLoad.Start(AllPaths(), Load(mode, TimeSpan.FromMinutes(3)), Token);
        await Task.Delay(TimeSpan.FromSeconds(1), Token);

        for (var version = 2; version <= NewGenerations + 1; version++)
        {
            generations.Add(await Service.DeployAsync($"v{version}", TakeoverTimeout, Token));
            await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        }

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        var result = await load.StopAsync(Token);

        AssertNoFailures(result);
        var pids = generations.ToDictionary(g => g.Process.Pid, g => g.Text);
        foreach (var body in result.Bodies.Keys)
        {
            Assert.True(pids.TryGetValue(PidOf(body), out var text) && text == TextOf(body), $"Response '{body.Trim()}' came from no generation launched here.");
        }

        var newest = result.RecentResponses.TakeLast(200).ToList();
        Assert.NotEmpty(newest);
        Assert.All(newest, r => Assert.Equal($"v{NewGenerations + 1}", TextOf(r.Body)));
        foreach (var target in AllPaths())
        {
            Assert.Contains(result.RecentResponses, r => r.Target == target.Name);
        }

        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
        }

        var state = Service.ReadState()!;
        Assert.Equal([generations[^1].Process.Pid], state.Generations.Select(g => g.Pid));
        Assert.Equal(GenerationState.Active, state.Generations.Single().State);

        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{mode}: {result.TotalRequests} requests, {result.FailureCount} failed, {NewGenerations} handoffs, " +
            $"launch to serving {string.Join(" / ", generations.Select(g => $"{g.LaunchToServing.TotalMilliseconds:0} ms"))}, " +
            $"{result.TotalRequests / result.Duration.TotalSeconds:0} req/s"));

        generations[^1].Process.SendSignal(Signals.Terminate);
        Assert.Equal(0, await ExitsWithinAsync(generations[^1].Process, TimeSpan.FromSeconds(30)));
        Assert.Null(await Service.TableAsync(Token));
        Assert.False(Directory.Exists(Service.StateDirectory), "The last generation left its state directory behind.");
    }
}
