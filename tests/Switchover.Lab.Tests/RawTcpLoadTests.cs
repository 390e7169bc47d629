using System.Net;
using System.Text;
using Xunit.Abstractions;

namespace Switchover.Lab.Tests;

[Collection(NetnsTestGroup.Name)]
public sealed class RawTcpLoadTests(LabFixture fixture, ITestOutputHelper output) : IClassFixture<LabFixture>, IDisposable
{
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(50));

    private TwoHostLab Lab => fixture.Lab;

    public void Dispose() => _timeout.Dispose();

    [Theory(Timeout = 60_000)]
    [InlineData(ConnectionMode.KeepAlive, null)]
    [InlineData(ConnectionMode.NewConnectionPerRequest, null)]
    [InlineData(ConnectionMode.KeepAlive, "220 hello")]
    [InlineData(ConnectionMode.NewConnectionPerRequest, "220 hello")]
    public async Task Raw_tcp_load_gets_every_line_answered_whole_even_when_it_arrives_byte_by_byte(ConnectionMode mode, string? greeting)
    {
        await using var server = TinyLineServer.Start(Lab.Server, LineServerBehavior.Echo, greeting);
        var options = RawOptions(mode, greeting is null ? 0 : 1);
        options.MaxDuration = TimeSpan.FromSeconds(1.5);

        var result = await HttpLoad.RunAsync(Targets(server.Port), options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.FailureCount == 0, result.Summary);
        Assert.True(result.OkCount > 50, result.Summary);
        Assert.Equal(result.OkCount, result.Bodies["echo: ping"].Count);
        Assert.Single(result.Bodies);

        // Nothing sent twice or lost: the server answered exactly what the driver counted, on the connections it counted.
        Assert.Equal(result.TotalRequests, server.Requests);
        Assert.Equal(mode == ConnectionMode.KeepAlive ? 4 : result.TotalRequests, result.ConnectionsOpened);
        Assert.Equal(result.ConnectionsOpened, server.Connections);
        Assert.Equal(result.OkCount, result.Latency.Count);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_raw_server_that_closes_between_responses_costs_no_request()
    {
        await using var server = TinyLineServer.Start(Lab.Server, LineServerBehavior.CloseEverySecondResponse);
        var options = RawOptions(ConnectionMode.KeepAlive, 0);
        options.MaxRequests = 200;

        var result = await HttpLoad.RunAsync([NetV4(server.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.FailureCount == 0, result.Summary);
        Assert.Equal(200, result.OkCount);

        // A raw protocol cannot announce the close, so each closed connection is found stale before its reuse.
        Assert.InRange(result.StaleConnectionsDiscarded, 90, 100);
        Assert.InRange(result.ConnectionsOpened, 100, 102);
    }

    [Theory(Timeout = 60_000)]
    [InlineData(LineServerBehavior.WrongAnswer, RequestOutcome.BadBody, ConnectionMode.KeepAlive)]
    [InlineData(LineServerBehavior.CloseMidResponse, RequestOutcome.EndOfStreamBeforeResponse, ConnectionMode.KeepAlive)]
    [InlineData(LineServerBehavior.CloseMidResponse, RequestOutcome.EndOfStreamBeforeResponse, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(LineServerBehavior.Reset, RequestOutcome.ConnectionReset, ConnectionMode.NewConnectionPerRequest)]
    [InlineData(LineServerBehavior.NeverRespond, RequestOutcome.Timeout, ConnectionMode.KeepAlive)]
    public async Task Every_raw_request_to_a_misbehaving_server_is_classified_as_what_went_wrong(
        LineServerBehavior behavior, RequestOutcome expected, ConnectionMode mode)
    {
        await using var server = TinyLineServer.Start(Lab.Server, behavior);
        var options = RawOptions(mode, 0);
        options.MaxRequests = 100;
        options.MaxDuration = TimeSpan.FromSeconds(3);

        // Short only where the timeout is what is tested: on a loaded machine a 200 ms bound turned some early ends
        // into timeouts.
        options.RequestTimeout = behavior == LineServerBehavior.NeverRespond ? TimeSpan.FromMilliseconds(200) : TimeSpan.FromSeconds(5);

        var result = await HttpLoad.RunAsync(Targets(server.Port), options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.True(result.TotalRequests > 0, result.Summary);
        Assert.True(result.Count(expected) == result.TotalRequests, result.Summary);
        Assert.All(result.Failures, f => Assert.Equal(expected, f.Kind));
        Assert.Equal(result.TotalRequests, server.Requests);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_greeting_that_never_comes_is_a_timeout_and_a_greeting_cut_short_is_an_early_end()
    {
        await using var silent = TinyLineServer.Start(Lab.Server);
        var options = RawOptions(ConnectionMode.NewConnectionPerRequest, 1);
        options.MaxRequests = 4;
        options.RequestTimeout = TimeSpan.FromMilliseconds(200);

        var result = await HttpLoad.RunAsync([NetV4(silent.Port)], options, _timeout.Token);
        output.WriteLine(result.Summary);

        Assert.Equal(4, result.Count(RequestOutcome.Timeout));
        Assert.All(result.Failures, f => Assert.Contains("greeting", f.Detail, StringComparison.Ordinal));
        Assert.Equal(0, silent.Requests);
    }

    [Fact]
    public void Raw_tcp_needs_a_request_to_send()
    {
        var options = new LoadOptions { Protocol = LoadProtocol.RawTcp, RawRequest = ReadOnlyMemory<byte>.Empty, RawGreetingResponses = -1 };

        var e = Assert.Throws<ArgumentException>(() => HttpLoad.Start([NetV4(1)], options));

        Assert.Contains("RawRequest", e.Message, StringComparison.Ordinal);
        Assert.Contains("RawGreetingResponses", e.Message, StringComparison.Ordinal);
    }

    private static LoadOptions RawOptions(ConnectionMode mode, int greetings) => new()
    {
        Protocol = LoadProtocol.RawTcp,
        Mode = mode,
        Concurrency = 2,
        RawRequest = Encoding.ASCII.GetBytes("ping\r\n"),
        RawGreetingResponses = greetings,
        BodyValidator = body => body == "echo: ping",
    };

    private LoadTarget NetV4(int port) => new(Lab.Client, new IPEndPoint(Lab.ServerV4, port), "net-v4");

    private LoadTarget[] Targets(int port) =>
        [NetV4(port), new LoadTarget(Lab.Server, new IPEndPoint(IPAddress.IPv6Loopback, port), "local-v6")];
}
