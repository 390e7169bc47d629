using System.Net;
using System.Net.Sockets;

namespace Switchover.IntegrationTests;

public sealed class Http2Tests(ITestOutputHelper output) : TestBase(output)
{
    [Fact(Timeout = 120_000)]
    public async Task An_http2_client_on_one_connection_gets_goaway_and_moves_to_the_new_generation_without_a_failure()
    {
        string[] http2 = ["--Kestrel:EndpointDefaults:Protocols=Http2"];
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token, http2);
        var target = new IPEndPoint(Lab.ServerV4, PublicPort);
        var connections = 0;
        using var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectCallback = async (_, ct) =>
            {
                Interlocked.Increment(ref connections);
                var socket = Lab.Client.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(target, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        using var client = new HttpClient(handler)
        {
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };

        var bodies = new List<string>();
        var failures = new List<string>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var requests = Task.Run(async () =>
        {
            for (var i = 0; i < 100_000 && !stop.IsCancellationRequested; i++)
            {
                try
                {
                    using var response = await client.GetAsync(new Uri($"http://{target}/"), Token);
                    Assert.Equal(HttpVersion.Version20, response.Version);
                    bodies.Add(await response.Content.ReadAsStringAsync(Token));
                }
                catch (Exception e) when (e is HttpRequestException or IOException)
                {
                    failures.Add(e.Message);
                }
            }
        }, Token);

        await Task.Delay(1000, Token);
        var v2 = await Service.DeployAsync("v2", TakeoverTimeout, Token, http2);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(15)));
        await Task.Delay(500, Token);
        await stop.CancelAsync();
        await requests;

        Output.WriteLine($"{bodies.Count} HTTP/2 requests on {connections} connection(s), {failures.Count} failed");
        Assert.Empty(failures);
        Assert.Equal(2, connections);
        Assert.Equal($"v2 {v2.Process.Pid}", bodies[^1].Trim());
        Assert.Contains($"v1 {v1.Process.Pid}\n", bodies);
        Assert.Contains("drained in", v1.Process.Output, StringComparison.Ordinal);
        Assert.Contains("(quiet)", v1.Process.Output, StringComparison.Ordinal);
    }
}
