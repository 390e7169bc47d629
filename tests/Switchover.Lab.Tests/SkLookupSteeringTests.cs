using System.Net;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace Switchover.Lab.Tests;

/// <summary>
/// The BPF sk_lookup prototype that the overhead scenario measures (<see cref="SkLookupSteering"/>), on a real kernel:
/// it steers the public port to a listener bound elsewhere, a handoff under load is one map update that fails no
/// request, it steers nothing else, and detaching leaves the port as it was.
/// </summary>
[Collection(NetnsTestGroup.Name)]
public sealed class SkLookupSteeringTests(LabFixture fixture, ITestOutputHelper output) : IClassFixture<LabFixture>, IDisposable
{
    private const int PublicPort = 8080;

    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(50));

    private TwoHostLab Lab => fixture.Lab;

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 60_000)]
    public async Task A_handoff_is_one_map_update_that_fails_no_request_of_a_new_connection_each()
    {
        await using var v1 = TinyHttpServer.Start(Lab.Server, body: "v1");
        await using var v2 = TinyHttpServer.Start(Lab.Server, body: "v2");

        // Nothing listens on the public port: every answer below came through the program.
        await AssertRefusedAsync(PublicPort);
        using (var steering = SkLookupSteering.Attach(Lab.Server.Name, PublicPort, (int)v1.Listener.Handle))
        {
            var options = new LoadOptions
            {
                Mode = ConnectionMode.NewConnectionPerRequest,
                Concurrency = 2,
                MaxDuration = TimeSpan.FromSeconds(3),
                BodyValidator = body => body is "v1" or "v2",
            };
            // Over the network and over loopback inside the server's namespace, IPv4 and IPv6 (to the dual-stack listeners).
            var targets = Lab.AllPaths(PublicPort);
            var load = HttpLoad.RunAsync(targets, options, _timeout.Token);
            await Task.Delay(TimeSpan.FromSeconds(1.2), _timeout.Token);
            steering.Steer((int)v2.Listener.Handle);
            var served = v1.Requests;
            var result = await load;
            output.WriteLine(result.Summary);

            Assert.True(result.FailureCount == 0, result.Summary);
            Assert.True(result.Bodies.TryGetValue("v1", out var before) && before.Count > 50, $"v1 answered {before?.Count ?? 0} before the handoff:\n{result.Summary}");
            Assert.True(result.Bodies.TryGetValue("v2", out var after) && after.Count > 50, $"v2 answered {after?.Count ?? 0} after the handoff:\n{result.Summary}");

            // After the update v1 got no new connection: at most those already in its accept queue were answered.
            Assert.InRange(v1.Requests - served, 0, targets.Count * options.Concurrency);
            Assert.Equal("v2", await GetAsync(Lab.ServerV4, PublicPort));
            Assert.Equal("v2", await GetAsync(Lab.ServerV6, PublicPort));

            // Only TCP to the public port is steered.
            await AssertRefusedAsync(PublicPort + 1);
        }

        // Detached: the public port is refused again, the listeners still serve their own ports.
        await AssertRefusedAsync(PublicPort);
        Assert.Equal("v1", await GetAsync(Lab.ServerV4, v1.Port));
    }

    private async Task AssertRefusedAsync(int port)
    {
        using var socket = Lab.Client.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var e = await Assert.ThrowsAsync<SocketException>(async () => await socket.ConnectAsync(new IPEndPoint(Lab.ServerV4, port), _timeout.Token));
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
    }

    private async Task<string> GetAsync(IPAddress address, int port)
    {
        using var socket = Lab.Client.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(address, port), _timeout.Token);
        await socket.SendAsync("GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"u8.ToArray(), _timeout.Token);
        var response = new List<byte>();
        var buffer = new byte[4096];
        int read;
        while ((read = await socket.ReceiveAsync(buffer, _timeout.Token)) > 0)
        {
            response.AddRange(buffer.AsSpan(0, read));
        }

        var text = System.Text.Encoding.ASCII.GetString(response.ToArray());
        Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
        return text[(text.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
    }
}
