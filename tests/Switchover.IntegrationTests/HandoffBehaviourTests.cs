using System.Net;
using System.Net.Sockets;
using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

public sealed class HandoffBehaviourTests(ITestOutputHelper output) : TestBase(output)
{
    [Fact(Timeout = 120_000)]
    public async Task A_request_in_flight_on_the_old_generation_completes_after_the_new_one_took_over()
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var slow = GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/?delay=3000", Token);
        await Task.Delay(300, Token);

        await Service.DeployAsync("v2", TakeoverTimeout, Token);
        Assert.False(slow.IsCompleted, "The slow request finished before the handoff; the test proves nothing.");
        var (status, body) = await slow;

        Assert.Equal(200, status);
        Assert.Equal($"v1 {v1.Process.Pid}", body.Trim());
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(30)));
        Assert.StartsWith("v2 ", (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body, StringComparison.Ordinal);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_private_port_does_not_answer_from_the_network_while_the_public_port_does()
    {
        await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var privatePort = Service.ReadState()!.Active!.Ports.Single().PrivatePort;

        foreach (var server in new[] { Lab.ServerV4, Lab.ServerV6 })
        {
            Assert.Equal(200, (await GetAsync(Lab.Client, new IPEndPoint(server, PublicPort), "/", Token)).Status);

            using var socket = Lab.Client.CreateSocket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            using var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(Token);
            connectTimeout.CancelAfter(TimeSpan.FromSeconds(2));
            var attempt = socket.ConnectAsync(new IPEndPoint(server, privatePort), connectTimeout.Token).AsTask();
            var error = await Record.ExceptionAsync(() => attempt);
            Assert.True(error is OperationCanceledException, $"Connecting to private port {privatePort} on {server} should time out (dropped), got: {error?.GetType().Name ?? "a connection"}");
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task A_generation_that_never_gets_ready_does_not_take_over_and_the_old_one_serves_on()
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(2)), Token);

        var unhealthy = Service.Launch("v2-unhealthy", ["--FailHealth=true", "--Switchover:ReadinessTimeout=00:00:03"], Artifacts.TestServer);
        var crashing = Service.Launch("v3-crashing", ["--FailHealth=true", "--CrashAfterMs=1500"], Artifacts.TestServer);

        Assert.Equal(1, await ExitsWithinAsync(unhealthy, TimeSpan.FromSeconds(30)));
        Assert.Contains("Not ready after 3 s", unhealthy.Output, StringComparison.Ordinal);
        Assert.Contains("health checks report Unhealthy: knob=Unhealthy (FailHealth is set)", unhealthy.Output, StringComparison.Ordinal);
        Assert.Contains("the previous generation keeps serving", unhealthy.Output, StringComparison.Ordinal);
        Assert.NotEqual(0, await ExitsWithinAsync(crashing, TimeSpan.FromSeconds(30)));
        await Task.Delay(500, Token);

        var result = await load.StopAsync(Token);
        AssertNoFailures(result);
        Assert.Equal([$"v1 {v1.Process.Pid}\n"], result.Bodies.Keys);
        Assert.False(v1.Process.HasExited);
        Assert.Equal(v1.Process.Pid, Service.ReadState()!.Active!.Pid);

        // Whatever the crashed generation left in the state is gone after the next deploy.
        var v4 = await Service.DeployAsync("v4", TakeoverTimeout, Token);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(30)));
        Assert.Equal([v4.Process.Pid], Service.ReadState()!.Generations.Select(g => g.Pid));
    }

    [Fact(Timeout = 240_000)]
    public async Task Overlapping_deploys_leave_exactly_one_active_generation_and_nothing_orphaned()
    {
        await Service.DeployAsync("v0", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(3)), Token);

        for (var round = 1; round <= 3; round++)
        {
            var launched = Enumerable.Range(1, 3).Select(i => Service.Launch($"r{round}g{i}")).ToList();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (Service.Processes.Count(p => !p.HasExited) > 1 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200, Token);
            }

            var alive = Service.Processes.Where(p => !p.HasExited).ToList();
            Assert.True(alive.Count == 1, $"Round {round}: {alive.Count} generations still run.\n{string.Join("\n---\n", alive.Select(p => p.Output))}");
            Assert.Contains(alive[0], launched);
            var state = Service.ReadState()!;
            Assert.Equal([alive[0].Pid], state.Generations.Select(g => g.Pid));
            Assert.Equal(GenerationState.Active, state.Generations[0].State);
            var table = await Service.TableAsync(Token);
            Assert.Contains($"pid={alive[0].Pid}", table, StringComparison.Ordinal);
            Assert.Single(System.Text.RegularExpressions.Regex.Matches(table!, "drop"));
            Assert.Contains($"tcp dport {state.Generations[0].Ports[0].PrivatePort} drop", table, StringComparison.Ordinal);
        }

        AssertNoFailures(await load.StopAsync(Token));
    }

    [Fact(Timeout = 180_000)]
    public async Task A_foreign_table_changing_during_handoffs_is_left_exactly_as_it_was()
    {
        const string foreign = """
            table inet foreign {
            	set blocked {
            		type ipv4_addr
            	}
            	chain input {
            		type filter hook input priority -10; policy accept;
            		ip saddr @blocked drop
            		tcp dport 9999 counter accept
            	}
            	chain prerouting {
            		type nat hook prerouting priority -110; policy accept;
            		tcp dport 9998 redirect to :9997
            	}
            }
            """;
        await Lab.Server.RunAsync("sh", ["-c", $"printf '%s\\n' '{foreign}' | nft -f -"], Token);
        var before = await ListForeignAsync();

        await Service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(2)), Token);
        using var stopChurn = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var churn = ChurnAsync(stopChurn.Token);
        for (var version = 2; version <= 4; version++)
        {
            await Service.DeployAsync($"v{version}", TakeoverTimeout, Token);
            await Task.Delay(1000, Token);
        }

        await stopChurn.CancelAsync();
        var changes = await churn;
        AssertNoFailures(await load.StopAsync(Token));

        Assert.True(changes > 10, $"The foreign table changed only {changes} times.");
        Assert.Equal(before, await ListForeignAsync());
        await Lab.Server.RunAsync("nft", ["delete", "table", "inet", "foreign"], Token);

        async Task<string> ListForeignAsync() =>
            (await Lab.Server.RunAsync("nft", ["list", "table", "inet", "foreign"], Token)).StandardOutput;

        // Adds and removes an element and a rule, at most 2,000 times, until stopped.
        async Task<int> ChurnAsync(CancellationToken stop)
        {
            var count = 0;
            while (!stop.IsCancellationRequested && count < 2000)
            {
                await Lab.Server.RunAsync("nft", ["add", "element", "inet", "foreign", "blocked", "{ 203.0.113.7 }"], Token);
                await Lab.Server.RunAsync("nft", ["add", "rule", "inet", "foreign", "input", "tcp", "dport", "9996", "accept"], Token);
                await Lab.Server.RunAsync("nft", ["delete", "element", "inet", "foreign", "blocked", "{ 203.0.113.7 }"], Token);
                await Lab.Server.RunAsync("nft", ["flush", "chain", "inet", "foreign", "input"], Token);
                await Lab.Server.RunAsync("nft", ["add", "rule", "inet", "foreign", "input", "ip", "saddr", "@blocked", "drop"], Token);
                await Lab.Server.RunAsync("nft", ["add", "rule", "inet", "foreign", "input", "tcp", "dport", "9999", "counter", "accept"], Token);
                count++;
            }

            return count;
        }
    }
}
