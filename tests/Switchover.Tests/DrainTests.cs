using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Switchover.Hosting;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

public sealed class DrainTests
{
    private static readonly GenerationRecord Draining =
        new(3, 1, 1, GenerationState.Draining, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 1)], Steering.Tproxy);

    [Fact(Timeout = 10000)]
    public async Task A_shutdown_timeout_during_a_slow_conntrack_dump_ends_the_drain_instead_of_throwing()
    {
        using var shutdown = new CancellationTokenSource();
        var runner = new RecordingRunner
        {
            Answer = _ =>
            {
                shutdown.Cancel();
                throw new OperationCanceledException(shutdown.Token);
            },
        };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(runner), Plan(new DrainOptions()), NullLogger.Instance);

        var report = await drain.RunAsync(Draining, shutdown.Token);

        Assert.False(report.ReachedQuiet);
        Assert.Single(runner.Commands);
    }

    [Fact(Timeout = 10000)]
    public async Task With_nothing_arriving_the_drain_ends_after_the_quiet_period()
    {
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(300), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(new RecordingRunner()), Plan(options), NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.True(report.ReachedQuiet);
        Assert.InRange(report.Elapsed, options.QuietPeriod, TimeSpan.FromSeconds(5));
    }

    [Fact(Timeout = 10000)]
    public async Task Half_open_flows_keep_the_listener_open_until_they_are_gone()
    {
        var halfOpen = 3;
        var runner = new RecordingRunner
        {
            Answer = _ => new Processes.CommandResult(0,
                halfOpen-- > 0 ? "tcp      6 119 SYN_RECV src=192.0.2.2 dst=192.0.2.1 sport=5 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=1 dport=5 mark=0 use=1\n" : string.Empty,
                string.Empty, TimeSpan.Zero),
        };
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(200), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(runner), Plan(options), NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.True(report.ReachedQuiet);
        Assert.All(runner.Commands, c => Assert.Equal(["-L", "-p", "tcp", "--mark", "0x00040000/0x00ff0000"], c.Arguments));
        Assert.True(report.Elapsed >= TimeSpan.FromMilliseconds(3 * 50 + 200), $"The drain ended after {report.Elapsed} while flows were half-open.");
    }

    [Fact(Timeout = 10000)]
    public async Task By_default_an_idle_connection_keeps_the_drain_going_until_its_client_closes_it()
    {
        var generation = new LocalGeneration();
        var idle = generation.ConnectionOpened();
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(200), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(generation, new ConntrackClient(new RecordingRunner()), Plan(options), NullLogger.Instance);

        var running = drain.RunAsync(Draining, CancellationToken.None);
        await Task.Delay(TimeSpan.FromMilliseconds(800));
        Assert.False(running.IsCompleted, "The drain ended while an idle connection within the keep-alive timeout was still open.");
        generation.ConnectionClosed(idle);
        var report = await running;

        Assert.True(report.ReachedQuiet);
        Assert.Equal(1, report.OpenAtStart);
        Assert.Equal(0, report.OpenConnections);
    }

    [Fact(Timeout = 10000)]
    public async Task A_connection_whose_request_is_in_progress_keeps_the_drain_going_until_the_request_ends_and_its_client_closes()
    {
        var generation = new LocalGeneration();
        var connection = generation.ConnectionOpened();
        connection.RequestStarted(http2: false);
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(100), PollInterval = TimeSpan.FromMilliseconds(20) };
        var plan = Plan(options, keepAlive: TimeSpan.FromMilliseconds(300));
        var drain = new Drain(generation, new ConntrackClient(new RecordingRunner()), plan, NullLogger.Instance);

        var running = drain.RunAsync(Draining, CancellationToken.None);
        await Task.Delay(TimeSpan.FromMilliseconds(600));
        Assert.False(running.IsCompleted, "The drain ended while a request was in progress.");
        connection.RequestEnded();
        await Task.Delay(TimeSpan.FromMilliseconds(150));
        Assert.False(running.IsCompleted, "The drain ended right after the request, before the connection was idle for the keep-alive timeout.");
        var report = await running;

        Assert.True(report.ReachedQuiet);
        Assert.Equal(1, report.Connections.IdlePastKeepAlive);
        Assert.True(report.Elapsed >= TimeSpan.FromMilliseconds(600 + 300), $"The drain ended after {report.Elapsed}.");
    }

    [Fact(Timeout = 10000)]
    public async Task An_http2_connection_does_not_keep_the_drain_going_once_no_request_arrives()
    {
        var generation = new LocalGeneration();
        var connection = generation.ConnectionOpened();
        connection.RequestStarted(http2: true);
        connection.RequestEnded();
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(200), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(generation, new ConntrackClient(new RecordingRunner()), Plan(options), NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.True(report.ReachedQuiet);
        Assert.Equal(1, report.Connections.Http2);
        Assert.True(report.Elapsed < TimeSpan.FromSeconds(5), $"The drain took {report.Elapsed}.");
    }

    [Theory(Timeout = 10000)]
    [InlineData(IdleConnectionPolicy.CloseAfterQuiet, true)]
    [InlineData(IdleConnectionPolicy.WaitForClient, false)]
    public async Task CloseAfterQuiet_or_a_generation_with_no_successor_ends_the_drain_with_idle_connections_open(IdleConnectionPolicy policy, bool superseded)
    {
        var generation = new LocalGeneration();
        generation.ConnectionOpened();
        var options = new DrainOptions { IdleConnections = policy, QuietPeriod = TimeSpan.FromMilliseconds(200), PollInterval = TimeSpan.FromMilliseconds(50) };
        var plan = DrainPlan.For(options, TimeSpan.FromSeconds(130), superseded);
        var drain = new Drain(generation, new ConntrackClient(new RecordingRunner()), plan, NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.Equal(IdleConnectionPolicy.CloseAfterQuiet, plan.IdleConnections);
        Assert.True(report.ReachedQuiet);
        Assert.Equal(1, report.OpenConnections);
    }

    [Fact]
    public void The_default_bound_covers_the_keep_alive_timeout_and_an_explicit_one_wins()
    {
        Assert.Equal(TimeSpan.FromSeconds(140), DrainPlan.For(new DrainOptions(), TimeSpan.FromSeconds(130), superseded: true).Bound);
        Assert.Equal(TimeSpan.FromSeconds(15), DrainPlan.For(new DrainOptions(), TimeSpan.FromSeconds(5), superseded: true).Bound);
        Assert.Equal(TimeSpan.FromSeconds(20), DrainPlan.For(new DrainOptions { IdleConnections = IdleConnectionPolicy.CloseAfterQuiet }, TimeSpan.FromSeconds(130), superseded: true).Bound);
        Assert.Equal(TimeSpan.FromSeconds(20), DrainPlan.For(new DrainOptions(), TimeSpan.FromSeconds(130), superseded: false).Bound);
        Assert.Equal(TimeSpan.FromSeconds(300), DrainPlan.For(new DrainOptions { MaxDuration = TimeSpan.FromSeconds(300) }, TimeSpan.FromSeconds(130), superseded: true).Bound);
    }

    [Fact]
    public void A_drain_bound_shorter_than_the_keep_alive_timeout_is_warned_about_with_the_ways_out_and_wins()
    {
        var options = new DrainOptions { MaxDuration = TimeSpan.FromSeconds(20) };

        var warning = DrainPlan.BoundWarning(options, TimeSpan.FromSeconds(130));

        Assert.NotNull(warning);
        Assert.Contains("Switchover:Drain:MaxDuration (20 s) is shorter than Kestrel's keep-alive timeout (130 s)", warning, StringComparison.Ordinal);
        Assert.Contains("MaxDuration wins", warning, StringComparison.Ordinal);
        Assert.Contains("at least 131 s", warning, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(20), DrainPlan.For(options, TimeSpan.FromSeconds(130), superseded: true).Bound);
        Assert.Null(DrainPlan.BoundWarning(options, TimeSpan.FromSeconds(15)));
        Assert.Null(DrainPlan.BoundWarning(new DrainOptions(), TimeSpan.FromSeconds(130)));
        options.IdleConnections = IdleConnectionPolicy.CloseAfterQuiet;
        Assert.Null(DrainPlan.BoundWarning(options, TimeSpan.FromSeconds(130)));
    }

    [Fact]
    public void An_infinite_keep_alive_timeout_bounds_the_wait_at_ten_minutes_and_says_so()
    {
        var warning = DrainPlan.BoundWarning(new DrainOptions(), Timeout.InfiniteTimeSpan);

        Assert.Contains("infinite", warning, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromMinutes(10), DrainPlan.For(new DrainOptions(), Timeout.InfiniteTimeSpan, superseded: true).Bound);
    }

    [Theory]
    [InlineData(null, 155)]
    [InlineData("CloseAfterQuiet", 35)]
    public void The_hosts_shutdown_timeout_is_raised_to_cover_the_drain_and_Kestrels_stop(string? policy, int expectedSeconds)
    {
        string[] args = ["--Switchover:Namespace=unit", .. policy is null ? Array.Empty<string>() : [$"--Switchover:Drain:IdleConnections={policy}"]];
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateBuilder(args);
        Microsoft.AspNetCore.Hosting.SwitchoverWebHostBuilderExtensions.UseSwitchover(builder.WebHost);
        using var app = builder.Build();

        var host = app.Services.GetRequiredService<IOptions<HostOptions>>().Value;

        Assert.Equal(TimeSpan.FromSeconds(expectedSeconds), host.ShutdownTimeout);
        Assert.Equal((TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(expectedSeconds)), app.Services.GetRequiredService<SwitchoverConfiguration>().ShutdownTimeoutRaised);
    }

    private static DrainPlan Plan(DrainOptions options, TimeSpan? keepAlive = null) =>
        DrainPlan.For(options, keepAlive ?? TimeSpan.FromSeconds(130), superseded: true);
}
