using System.Net;
using System.Net.Sockets;

namespace Switchover.Lab.Tests;

[Collection(NetnsTestGroup.Name)]
public sealed class TwoHostLabTests : IDisposable
{
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(50));

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 60_000)]
    public async Task The_client_reaches_the_server_over_IPv4_and_IPv6_from_its_own_addresses()
    {
        var lab = await TwoHostLab.CreateAsync(_timeout.Token);
        string[] names = [lab.Server.Name, lab.Client.Name];
        await using (lab)
        {
            Assert.Equal(names.Order(), (await Netns.ListAsync()).Intersect(names).Order());
            foreach (var (server, client) in new[] { (lab.ServerV4, lab.ClientV4), (lab.ServerV6, lab.ClientV6) })
            {
                using var listener = lab.Server.CreateSocket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                listener.Bind(new IPEndPoint(server, 0));
                listener.Listen();
                using var socket = lab.Client.CreateSocket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                var accept = listener.AcceptAsync(_timeout.Token);
                await socket.ConnectAsync(listener.LocalEndPoint!, _timeout.Token);
                using var accepted = await accept;
                Assert.Equal(client, ((IPEndPoint)accepted.RemoteEndPoint!).Address);
            }

            // The client's own addresses belong to the client only.
            using var wrongSide = lab.Server.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            Assert.Throws<SocketException>(() => wrongSide.Bind(new IPEndPoint(lab.ClientV4, 0)));
        }

        Assert.Empty((await Netns.ListAsync()).Intersect(names));
    }
}
