using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>HTTP/2 under a client that never retries: h2load, many connections times many concurrent streams.</summary>
public sealed class Http2LoadTests(ITestOutputHelper output) : TestBase(output)
{
    private const int Handoffs = 5;

    [Fact(Timeout = 240_000)]
    public async Task H2load_with_many_concurrent_streams_over_the_network_loses_no_request_across_handoffs()
    {
        string[] h2c = ["--Kestrel:EndpointDefaults:Protocols=Http2"];
        Output.WriteLine(await H2Load.VersionAsync(Lab.Client, Token));
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token, h2c);

        // Alternate the families: IPv4 on odd handoffs, IPv6 on even ones, both over the veth (the network path).
        var options = new H2LoadOptions { Connections = 8, StreamsPerConnection = 16, Duration = TimeSpan.FromSeconds(15) };
        var runs = await RollingH2Load.RunAsync(Service, Lab.Client, v1, Handoffs,
            handoff => new Uri(handoff % 2 == 1 ? $"http://{Lab.ServerV4}:{PublicPort}/" : $"http://[{Lab.ServerV6}]:{PublicPort}/"),
            options, h2c, Output, Token);

        Output.WriteLine($"{Handoffs} handoffs: {H2LoadResult.Sum([.. runs.Select(r => r.Result)])}");
        Assert.All(runs, run => Assert.Equal("h2c", run.Result.ApplicationProtocol));
        H2LoadRun.AssertCleanAndMoved(runs, options);
    }
}
