using System.Net;
using Xunit.Abstractions;

namespace Switchover.Lab.Tests;

[Collection(NetnsTestGroup.Name)]
public sealed class HttpLoadTests(LabFixture fixture, ITestOutputHelper output) : IClassFixture<LabFixture>, IDisposable
{
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(50));

    private TwoHostLab Lab => fixture.Lab;

    public void Dispose() => _timeout.Dispose();

    [Theory(Timeout = 60_000)]
    [InlineData(ConnectionMode.KeepAlive)]
    [InlineData(ConnectionMode.NewConnectionPerRequest)]
    public async Task Load_over_the_network_and_local_paths_succeeds_without_a_single_failure(ConnectionMode mode)
    {
        await using var server = TinyHttpServer.Start(Lab.Server);
        var options = new LoadOptions
        {
            Mode = mode,
            Concurrency = 2,
            MaxDuration = TimeSpan.FromSeconds(2),
            Path = "/version?x=1",
            BodyValidator = body => body == "hello",
        };

        var result = await HttpLoad.RunAsync(AllPaths(server.Port), options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.FailureCount == 0, result.Summary);
        Assert.True(result.TotalRequests > 100, result.Summary);
        Assert.Equal(LoadStopReason.MaxDuration, result.StopReason);
        Assert.InRange(result.Duration, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(5));

        // No request was sent twice, or silently dropped: the server counted exactly what the driver counted.
        Assert.Equal(result.TotalRequests, server.Requests);
        Assert.Equal(mode == ConnectionMode.KeepAlive ? 8 : result.TotalRequests, result.ConnectionsOpened);
        Assert.Equal(result.OkCount, result.Bodies["hello"].Count);
        Assert.Equal(result.OkCount, result.Latency.Count);
        Assert.Equal(result.TotalRequests, result.Timeline.Sum(s => s.Ok + s.Failed));
        Assert.InRange(result.Timeline.Count, 2, 4);
        Assert.True(result.Latency.P50 <= result.Latency.P99 && result.Latency.P99 <= result.Latency.Max);
        Assert.Equal(["local-v4", "local-v6", "net-v4", "net-v6"], result.RecentResponses.Select(r => r.Target).Distinct().Order());
        Assert.True(result.RecentResponses.Count > 500);
    }

    [Fact(Timeout = 60_000)]
    public async Task With_the_probe_on_a_connection_the_server_closed_while_idle_is_replaced_before_the_request_is_sent()
    {
        await using var server = TinyHttpServer.Start(Lab.Server, ServerBehavior.CloseSilentlyEverySecondResponse);
        var options = new LoadOptions
        {
            Concurrency = 2,
            MaxRequests = 40,
            MinIdleBetweenRequests = TimeSpan.FromMilliseconds(20),
            MaxIdleBetweenRequests = TimeSpan.FromMilliseconds(60),
            Seed = 1,
        };

        var result = await HttpLoad.RunAsync([NetV4(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.FailureCount == 0, result.Summary);
        Assert.Equal(40, result.TotalRequests);
        Assert.InRange(result.StaleConnectionsDiscarded, 17, 20);
    }

    [Fact(Timeout = 60_000)]
    public async Task With_the_probe_off_a_request_sent_into_a_connection_the_server_closed_while_idle_fails_as_lost_on_reuse()
    {
        await using var server = TinyHttpServer.Start(Lab.Server, ServerBehavior.CloseSilentlyEverySecondResponse);
        var options = new LoadOptions
        {
            Concurrency = 2,
            MaxRequests = 60,
            ProbeBeforeReuse = false,
            MinIdleBetweenRequests = TimeSpan.FromMilliseconds(20),
            MaxIdleBetweenRequests = TimeSpan.FromMilliseconds(60),
            Seed = 1,
        };

        var result = await HttpLoad.RunAsync([NetV4(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        // Every third request goes into a connection closed after its second response: OK, OK, lost, OK, OK, lost...
        Assert.Equal(60, result.TotalRequests);
        Assert.Equal(0, result.StaleConnectionsDiscarded);
        Assert.InRange(result.Count(RequestOutcome.ReusedConnectionClosed), 18, 20);
        Assert.Equal(result.FailureCount, result.Count(RequestOutcome.ReusedConnectionClosed));
        Assert.All(result.Failures, f => Assert.Contains("reused kept-alive connection was closed by the server", f.Detail, StringComparison.Ordinal));
    }

    [Theory(Timeout = 60_000)]
    [InlineData(ServerBehavior.Chunked, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.Chunked, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(ServerBehavior.CloseEveryThirdResponse, ConnectionMode.KeepAlive)]
    public async Task Chunked_bodies_and_server_closed_connections_are_read_correctly(ServerBehavior behavior, ConnectionMode mode)
    {
        const string body = "hello, chunked world";
        await using var server = TinyHttpServer.Start(Lab.Server, behavior, body);
        var options = new LoadOptions
        {
            Mode = mode,
            Concurrency = 2,
            MaxDuration = TimeSpan.FromSeconds(1),
            BodyValidator = b => b == body,
        };

        var result = await HttpLoad.RunAsync([NetV4(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.FailureCount == 0, result.Summary);
        Assert.True(result.OkCount > 50, result.Summary);
        Assert.Equal(result.TotalRequests, server.Requests);
        if (behavior == ServerBehavior.CloseEveryThirdResponse)
        {
            Assert.InRange(result.ConnectionsOpened, result.TotalRequests / 3, (result.TotalRequests / 3) + 2);
        }
    }

    [Theory(Timeout = 60_000)]
    [InlineData(ServerBehavior.CloseAfterRequest, RequestOutcome.EndOfStreamBeforeResponse, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.CloseAfterRequest, RequestOutcome.EndOfStreamBeforeResponse, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(ServerBehavior.Status500, RequestOutcome.BadStatus, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.Status500, RequestOutcome.BadStatus, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(ServerBehavior.Reset, RequestOutcome.ConnectionReset, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.Reset, RequestOutcome.ConnectionReset, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(ServerBehavior.NeverRespond, RequestOutcome.Timeout, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.Garbage, RequestOutcome.OtherError, ConnectionMode.KeepAlive)]
    [InlineData(ServerBehavior.Ok, RequestOutcome.BadBody, ConnectionMode.KeepAlive)]
    public async Task Every_request_to_a_misbehaving_server_is_classified_as_what_went_wrong(
        ServerBehavior behavior, RequestOutcome expected, ConnectionMode mode)
    {
        await using var server = TinyHttpServer.Start(Lab.Server, behavior);
        var options = new LoadOptions
        {
            Mode = mode,
            Concurrency = 2,
            MaxRequests = 200,
            MaxDuration = TimeSpan.FromSeconds(3),
            RequestTimeout = TimeSpan.FromMilliseconds(200),
            BodyValidator = body => body == "something else",
        };

        var result = await HttpLoad.RunAsync([NetV4(server.Port), LocalV6(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        AssertAllFailedAs(expected, result);
        Assert.Equal(result.TotalRequests, server.Requests);
    }

    [Theory(Timeout = 60_000)]
    [InlineData(ConnectionMode.KeepAlive)]
    [InlineData(ConnectionMode.NewConnectionPerRequest)]
    public async Task A_port_without_listener_gives_connection_refused(ConnectionMode mode)
    {
        var options = new LoadOptions { Mode = mode, Concurrency = 2, MaxRequests = 200, MaxDuration = TimeSpan.FromSeconds(3) };

        var result = await HttpLoad.RunAsync([NetV4(1), LocalV6(1)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        AssertAllFailedAs(RequestOutcome.ConnectionRefused, result);
        Assert.Equal(LoadStopReason.MaxRequests, result.StopReason);
        Assert.Equal(200, result.TotalRequests);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_connect_that_gets_no_answer_times_out()
    {
        // 192.0.2.99 is on the lab link but nobody has it: ARP goes unanswered and the SYN is never sent.
        var options = new LoadOptions { Concurrency = 2, MaxRequests = 10, MaxDuration = TimeSpan.FromSeconds(3), ConnectTimeout = TimeSpan.FromMilliseconds(200) };

        var result = await HttpLoad.RunAsync(
            [new LoadTarget(Lab.Client, new IPEndPoint(IPAddress.Parse("192.0.2.99"), 80), "nobody")], options, _timeout.Token);
        output.WriteLine(result.Summary);

        AssertAllFailedAs(RequestOutcome.Timeout, result);
        Assert.All(result.Failures, f => Assert.StartsWith("no connection within 0.2 s", f.Detail, StringComparison.Ordinal));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_server_going_away_mid_run_shows_as_ok_then_failures_in_the_timeline()
    {
        var server = TinyHttpServer.Start(Lab.Server);
        var options = new LoadOptions { Concurrency = 2, MaxDuration = TimeSpan.FromSeconds(2.5), RequestsPerSecond = 2000 };
        await using var run = HttpLoad.Start([NetV4(server.Port)], options, _timeout.Token);
        await Task.Delay(TimeSpan.FromSeconds(1.2));
        await server.DisposeAsync();

        var result = await run.Completion;
        output.WriteLine(result.Summary);

        Assert.True(result.OkCount > 1000, result.Summary);
        Assert.True(result.Count(RequestOutcome.ConnectionRefused) > 100, result.Summary);
        Assert.True(result.Timeline[0].Ok > 0 && result.Timeline[0].Failed == 0, result.Summary);
        Assert.True(result.Timeline[^1].Ok == 0 && result.Timeline[^1].Failed > 0, result.Summary);
        Assert.True(result.Failures[0].Elapsed > TimeSpan.FromSeconds(1), result.Failures[0].ToString());
        Assert.True(result.Bodies["hello"].LastSeenUtc < result.Failures[^1].TimestampUtc);
    }

    [Fact(Timeout = 60_000)]
    public async Task MaxRequests_bounds_the_run_exactly()
    {
        await using var server = TinyHttpServer.Start(Lab.Server);
        var options = new LoadOptions { Concurrency = 8, MaxRequests = 500, MaxDuration = TimeSpan.FromSeconds(20) };

        var result = await HttpLoad.RunAsync([NetV6(server.Port)], options, _timeout.Token);

        Assert.Equal(LoadStopReason.MaxRequests, result.StopReason);
        Assert.Equal(500, result.TotalRequests);
        Assert.Equal(500, result.OkCount);
        Assert.Equal(500, server.Requests);
    }

    [Fact(Timeout = 60_000)]
    public async Task The_rate_cap_holds_across_workers_and_targets()
    {
        await using var server = TinyHttpServer.Start(Lab.Server);
        var options = new LoadOptions { Concurrency = 4, MaxDuration = TimeSpan.FromSeconds(1.5), RequestsPerSecond = 200 };

        var result = await HttpLoad.RunAsync([NetV4(server.Port), LocalV4(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.InRange(result.TotalRequests, 250, 310);
    }

    [Fact(Timeout = 60_000)]
    public async Task StopAsync_ends_a_long_run_and_lets_requests_in_flight_finish()
    {
        await using var server = TinyHttpServer.Start(Lab.Server);
        var options = new LoadOptions { Concurrency = 4, MaxDuration = TimeSpan.FromSeconds(40) };
        await using var run = HttpLoad.Start([NetV4(server.Port)], options, _timeout.Token);
        await Task.Delay(300);
        Assert.True(run.OkRequests > 0);
        Assert.Equal("hello", run.GetRecentResponses()[^1].Body);

        var result = await run.StopAsync(_timeout.Token);

        Assert.Equal(LoadStopReason.Stopped, result.StopReason);
        Assert.True(result.Duration < TimeSpan.FromSeconds(5));
        Assert.Equal((0, 0), (result.FailureCount, result.Abandoned));
        Assert.Equal(result.TotalRequests, server.Requests);
        Assert.Same(result, await run.Completion);
    }

    [Fact(Timeout = 60_000)]
    public async Task Cancelling_aborts_the_run_and_still_returns_what_was_measured()
    {
        await using var server = TinyHttpServer.Start(Lab.Server, ServerBehavior.NeverRespond);
        var options = new LoadOptions { Concurrency = 3, MaxDuration = TimeSpan.FromSeconds(40), RequestTimeout = TimeSpan.FromSeconds(30) };
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        var result = await HttpLoad.RunAsync([NetV4(server.Port)], options, cancel.Token);

        Assert.Equal(LoadStopReason.Cancelled, result.StopReason);
        Assert.True(result.Duration < TimeSpan.FromSeconds(5));
        Assert.Equal((0, 3), (result.TotalRequests, result.Abandoned));
    }

    [Fact]
    public void Invalid_options_are_all_reported_at_once()
    {
        var options = new LoadOptions { Concurrency = 0, MaxDuration = TimeSpan.Zero, MaxRequests = 0, Path = "no-slash", RequestsPerSecond = -1 };

        var e = Assert.Throws<ArgumentException>(() => HttpLoad.Start([NetV4(1)], options));

        foreach (var name in new[] { "Concurrency", "MaxDuration", "MaxRequests", "Path", "RequestsPerSecond" })
        {
            Assert.Contains(name, e.Message, StringComparison.Ordinal);
        }
    }

    private static void AssertAllFailedAs(RequestOutcome expected, LoadResult result)
    {
        Assert.True(result.TotalRequests > 0, result.Summary);
        Assert.True(result.Count(expected) == result.TotalRequests, result.Summary);
        Assert.Equal(0, result.OkCount);
        Assert.Equal(result.TotalRequests, result.Failures.Count);
        Assert.All(result.Failures, f =>
        {
            Assert.Equal(expected, f.Kind);
            Assert.False(string.IsNullOrWhiteSpace(f.Detail));
        });
    }

    private LoadTarget NetV4(int port) => new(Lab.Client, new IPEndPoint(Lab.ServerV4, port), "net-v4");

    private LoadTarget NetV6(int port) => new(Lab.Client, new IPEndPoint(Lab.ServerV6, port), "net-v6");

    private LoadTarget LocalV4(int port) => new(Lab.Server, new IPEndPoint(IPAddress.Loopback, port), "local-v4");

    private LoadTarget LocalV6(int port) => new(Lab.Server, new IPEndPoint(IPAddress.IPv6Loopback, port), "local-v6");

    private LoadTarget[] AllPaths(int port) => [NetV4(port), NetV6(port), LocalV4(port), LocalV6(port)];
}
