using System.Diagnostics;
using System.Globalization;
using System.Net;
using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

/// <summary>
/// The rollback window: a superseded generation keeps its listeners and watches its successor; when the successor
/// dies or turns unhealthy within the window, the previous one serves again. Without a previous one, the next
/// operation removes what the dead generation left. The invariant is checked after each step.
/// </summary>
public sealed class RollbackWindowTests(ITestOutputHelper output) : TestBase(output)
{
    /// <summary>What the tests claim as detection delay: a pidfd wakes the watcher at once; the rest is one nft transaction on a busy machine.</summary>
    private static readonly TimeSpan DetectionDelay = TimeSpan.FromSeconds(2);

    private SwitchoverService Windowed() => Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { RollbackWindow = TimeSpan.FromSeconds(20) });

    [Theory(Timeout = 180_000)]
    [InlineData(0)]
    [InlineData(50)]
    [InlineData(100)]
    [InlineData(200)]
    public async Task When_the_new_generation_is_killed_right_after_takeover_the_previous_one_serves_again_and_the_next_deploy_works(int killAfterMs)
    {
        var service = Windowed();
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromSeconds(90)), Token);
        await Task.Delay(TimeSpan.FromSeconds(1), Token);

        var v2 = await service.DeployAsync("v2", TakeoverTimeout, Token);
        await Task.Delay(killAfterMs, Token);
        var killedAt = DateTime.UtcNow;
        v2.Process.Kill();
        var detection = Stopwatch.StartNew();

        var invariant = await service.WaitForInvariantAsync(DetectionDelay, Token);
        Output.WriteLine(invariant.ToString());
        invariant.ThrowIfViolated();
        var served = await FirstAnswerAsync(new IPEndPoint(Lab.ServerV4, PublicPort), TimeSpan.FromSeconds(5));
        var servedAfter = detection.Elapsed;
        Assert.Equal($"v1 {v1.Process.Pid}", served);
        Assert.Equal(v1.Process.Pid, service.ReadState()!.Active!.Pid);
        Output.WriteLine(await v1.Process.WaitForOutputAsync("Rollback in namespace", TimeSpan.FromSeconds(5), Token));
        var recoveredAt = DateTime.UtcNow;

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        Assert.False(v1.Process.HasExited, "The generation rolled back to must keep serving.");
        var v3 = await service.DeployAsync("v3", TakeoverTimeout, Token);
        (await service.WaitForInvariantAsync(DetectionDelay, Token)).ThrowIfViolated();
        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        var result = await load.StopAsync(Token);

        var lastFailure = result.Failures.Count > 0
            ? string.Create(CultureInfo.InvariantCulture, $", the last {(result.Failures.Max(f => f.TimestampUtc) - killedAt).TotalMilliseconds:0} ms after the kill")
            : string.Empty;
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"killed {killAfterMs} ms after takeover: invariant held after {invariant.Waited.TotalMilliseconds:0} ms, v1 answered after {servedAfter.TotalMilliseconds:0} ms; " +
            $"{result.TotalRequests} requests, {result.FailureCount} failed{lastFailure}"));
        Output.WriteLine(result.ToString());
        foreach (var failure in result.Failures.Take(20))
        {
            Output.WriteLine(failure.ToString());
        }

        // Only what was in flight on the killed process, or sent to it before the rollback, may fail.
        Assert.All(result.Failures, f => Assert.InRange(f.TimestampUtc, killedAt.AddMilliseconds(-50), recoveredAt.AddSeconds(1)));
        Assert.Equal($"v3 {v3.Process.Pid}", (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim());
        v3.Process.SendSignal(Signals.Terminate);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(40)));
        Assert.Equal(0, await ExitsWithinAsync(v3.Process, TimeSpan.FromSeconds(40)));
    }

    [Fact(Timeout = 180_000)]
    public async Task When_the_new_generation_turns_unhealthy_in_the_window_the_previous_one_takes_the_ports_back_and_the_new_one_drains_away()
    {
        var service = Windowed();
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        var v2 = await service.DeployAsync("v2", TakeoverTimeout, Token, ["--FailAfterMs=4000"]);

        var served = await FirstAnswerAsync(new IPEndPoint(Lab.ServerV4, PublicPort), TimeSpan.FromSeconds(15), expected: $"v1 {v1.Process.Pid}");

        Assert.Equal($"v1 {v1.Process.Pid}", served);
        await v1.Process.WaitForOutputAsync("failed 3 health probes in a row", TimeSpan.FromSeconds(5), Token);
        Assert.Equal(0, await ExitsWithinAsync(v2.Process, TimeSpan.FromSeconds(40)));
        (await service.WaitForInvariantAsync(DetectionDelay, Token)).ThrowIfViolated();
        Assert.False(v1.Process.HasExited);
    }

    [Fact(Timeout = 180_000)]
    public async Task Switchover_rollback_by_hand_gives_the_ports_back_while_the_previous_generation_is_alive_and_refuses_after()
    {
        var service = Windowed();
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        var v2 = await service.DeployAsync("v2", TakeoverTimeout, Token);

        var rollback = await service.CliAsync(Token, "rollback", "--namespace", service.Name);

        Assert.True(rollback.ExitCode == 0, rollback.StandardOutput + rollback.StandardError);
        Assert.Contains($"generation 1 (pid {v1.Process.Pid}) holds the public ports again", rollback.StandardOutput, StringComparison.Ordinal);
        Assert.Equal($"v1 {v1.Process.Pid}", (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim());
        Assert.Equal(0, await ExitsWithinAsync(v2.Process, TimeSpan.FromSeconds(40)));
        (await service.WaitForInvariantAsync(DetectionDelay, Token)).ThrowIfViolated();

        var again = await service.CliAsync(Token, "rollback", "--namespace", service.Name);

        Assert.Equal(10, again.ExitCode);
        Assert.Contains("no superseded generation", again.StandardError, StringComparison.Ordinal);
        Assert.False(v1.Process.HasExited);
    }

    [Fact(Timeout = 180_000)]
    public async Task A_dead_generation_with_nothing_to_roll_back_to_leaves_no_rule_and_no_guard_after_the_next_status()
    {
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { RollbackWindow = TimeSpan.Zero });
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        var privatePort = service.ReadState()!.Active!.Ports[0].PrivatePort;
        v1.Process.Kill();
        await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(10));
        Assert.False((await service.CheckInvariantAsync(Token)).Holds, "Without a repair the dead generation's rule and guard are still there.");

        var status = await service.CliAsync(Token, "status", "--namespace", service.Name);

        Output.WriteLine(status.StandardOutput + status.StandardError);
        Assert.Contains("repaired namespace", status.StandardError, StringComparison.Ordinal);
        Assert.Null(await service.TableAsync(Token));
        (await service.CheckInvariantAsync(Token)).ThrowIfViolated();

        // A local process that binds the dead private port gets no public traffic, and nothing drops its replies.
        using var squatter = Lab.Server.CreateSocket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        squatter.Bind(new IPEndPoint(IPAddress.Any, privatePort));
        squatter.Listen();
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token));
        var next = await service.DeployAsync("v2", TakeoverTimeout, Token);
        Assert.Equal($"v2 {next.Process.Pid}", (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim());
    }

    /// <summary>Asks with a fresh connection every 10 ms until an answer (the expected one, if given) comes; bounded in time.</summary>
    private async Task<string?> FirstAnswerAsync(IPEndPoint to, TimeSpan within, string? expected = null)
    {
        var stopwatch = Stopwatch.StartNew();
        string? last = null;
        while (stopwatch.Elapsed < within)
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(Token);
                attempt.CancelAfter(TimeSpan.FromSeconds(1));
                var (status, body) = await GetAsync(Lab.Client, to, "/", attempt.Token);
                last = body.Trim();
                if (status == 200 && (expected is null || last == expected))
                {
                    return last;
                }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException && !Token.IsCancellationRequested)
            {
                last = e.Message;
            }

            await Task.Delay(10, Token);
        }

        return last;
    }
}
