using System.Net.Sockets;
using System.Text;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// The window every other tool leaves open: a connection whose SYN reached the old generation just before the swap,
/// but whose handshake completes after it. The old listener holds the half-open request; if it closed at the end of
/// a plain quiet period, the client's late ACK would meet no socket and be reset.
/// </summary>
public sealed class HalfOpenHandoffTests(ITestOutputHelper output) : TestBase(output)
{
    [Theory(Timeout = 120_000)]
    [InlineData(Steering.Tproxy)]
    [InlineData(Steering.Redirect)]
    public async Task A_handshake_that_completes_after_the_swap_is_served_by_the_old_generation(Steering steering)
    {
        string[] arguments = [$"--Switchover:Steering={steering}"];
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token, arguments);

        // Everything the client sends after its SYN is dropped on its way out: its kernel sees the SYN-ACK and calls
        // the connection established, while the server's side stays half-open (SYN_RECV) in v1's listener.
        await Lab.Client.RunAsync("nft", ["add", "table", "inet", "late_ack"], Token);
        await Lab.Client.RunAsync("nft", ["add", "chain", "inet", "late_ack", "output", "{ type filter hook output priority 0; policy accept; }"], Token);
        await Lab.Client.RunAsync("nft", ["add", "rule", "inet", "late_ack", "output", "tcp", "dport", "8080", "tcp", "flags", "&", "ack", "==", "ack", "drop"], Token);
        using var client = Lab.Client.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(new System.Net.IPEndPoint(Lab.ServerV4, PublicPort), Token);
        Output.WriteLine("connected; the server side is half-open");

        var v2 = await Service.DeployAsync("v2", TakeoverTimeout, Token, arguments);
        Output.WriteLine($"v2 took over: {v2.TakeoverLine}");
        await client.SendAsync(Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: {Lab.ServerV4}\r\nConnection: close\r\n\r\n"), Token);

        // Longer than the drain's quiet period (1 s) and the SYN-ACK's first retransmit: a drain that looked only at
        // its accept queue and its requests would have closed the listener by now.
        await Task.Delay(TimeSpan.FromSeconds(3), Token);
        Assert.False(v1.Process.HasExited, "v1 finished its drain while a handshake to it was still half-open.");
        await Lab.Client.RunAsync("nft", ["delete", "table", "inet", "late_ack"], Token);

        var response = await ReadToEndAsync(client, TimeSpan.FromSeconds(20));
        Output.WriteLine(response);
        Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        Assert.Contains($"v1 {v1.Process.Pid}\n", response, StringComparison.Ordinal);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(30)));
        Assert.Equal($"v2 {v2.Process.Pid}", (await GetAsync(Lab.Client, new System.Net.IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim());
    }

    private async Task<string> ReadToEndAsync(Socket socket, TimeSpan bound)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Token);
        timeout.CancelAfter(bound);
        var received = new MemoryStream();
        var buffer = new byte[4096];
        try
        {
            int read;
            while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            {
                received.Write(buffer, 0, read);
            }
        }
        catch (SocketException e)
        {
            Assert.Fail($"The connection failed instead of being answered: {e.SocketErrorCode} ({e.Message}); got so far: '{Encoding.ASCII.GetString(received.ToArray())}'");
        }

        return Encoding.ASCII.GetString(received.ToArray());
    }
}
