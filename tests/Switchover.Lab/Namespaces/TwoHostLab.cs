using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Switchover.Lab;

/// <summary>
/// Two hosts on one link: a <see cref="Server"/> and a <see cref="Client"/> namespace joined by a veth pair named
/// <c>eth0</c> on both sides, with documentation addresses (192.0.2.0/24, 2001:db8::/64). Nothing is added to the
/// root namespace. Disposing deletes both namespaces, and the veth pair with them.
/// </summary>
public sealed class TwoHostLab : IAsyncDisposable
{
    private const string Link = "eth0";

    private TwoHostLab(NetworkNamespace server, NetworkNamespace client)
    {
        Server = server;
        Client = client;
    }

    public NetworkNamespace Server { get; }

    public NetworkNamespace Client { get; }

    /// <summary>192.0.2.1</summary>
    public IPAddress ServerV4 { get; } = IPAddress.Parse("192.0.2.1");

    /// <summary>2001:db8::1</summary>
    public IPAddress ServerV6 { get; } = IPAddress.Parse("2001:db8::1");

    /// <summary>192.0.2.2</summary>
    public IPAddress ClientV4 { get; } = IPAddress.Parse("192.0.2.2");

    /// <summary>2001:db8::2</summary>
    public IPAddress ClientV6 { get; } = IPAddress.Parse("2001:db8::2");

    /// <summary>Creates both namespaces, links them and returns once TCP works between them over IPv4 and IPv6.</summary>
    public static async Task<TwoHostLab> CreateAsync(CancellationToken cancellationToken)
    {
        var server = await NetworkNamespace.CreateAsync("so-s", cancellationToken).ConfigureAwait(false);
        NetworkNamespace? client = null;
        try
        {
            client = await NetworkNamespace.CreateAsync("so-c", cancellationToken).ConfigureAwait(false);
            var lab = new TwoHostLab(server, client);
            await lab.ConfigureAsync(cancellationToken).ConfigureAwait(false);
            return lab;
        }
        catch
        {
            if (client is not null)
            {
                await client.DisposeAsync().ConfigureAwait(false);
            }

            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync().ConfigureAwait(false);
        await Server.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Load targets on every path to <paramref name="port"/> of the server: from the client over the veth (IPv4 and
    /// IPv6) and from the server itself over loopback (IPv4 and IPv6), named network-v4 ... localhost-v6 after <paramref name="prefix"/>.
    /// </summary>
    public IReadOnlyList<LoadTarget> AllPaths(int port, string prefix = "") =>
    [
        new(Client, new IPEndPoint(ServerV4, port), prefix + "network-v4"),
        new(Client, new IPEndPoint(ServerV6, port), prefix + "network-v6"),
        new(Server, new IPEndPoint(IPAddress.Loopback, port), prefix + "localhost-v4"),
        new(Server, new IPEndPoint(IPAddress.IPv6Loopback, port), prefix + "localhost-v6"),
    ];

    public override string ToString() =>
        $"{Server.Name} ({ServerV4}, {ServerV6}) <-> {Client.Name} ({ClientV4}, {ClientV6})";

    private async Task ConfigureAsync(CancellationToken cancellationToken)
    {
        // The peer is created directly in the client namespace, so both ends can be called eth0.
        await NetworkNamespace.Ip(cancellationToken, "-n", Server.Name, "link", "add", Link, "type", "veth", "peer", "name", Link, "netns", Client.Name)
            .ConfigureAwait(false);
        foreach (var (ns, v4, v6) in new[] { (Server, ServerV4, ServerV6), (Client, ClientV4, ClientV6) })
        {
            await NetworkNamespace.Ip(cancellationToken, "-n", ns.Name, "addr", "add", v4 + "/24", "dev", Link).ConfigureAwait(false);

            // nodad: the address is usable at once instead of after about a second of duplicate address detection.
            await NetworkNamespace.Ip(cancellationToken, "-n", ns.Name, "-6", "addr", "add", v6 + "/64", "dev", Link, "nodad").ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", ns.Name, "link", "set", Link, "up").ConfigureAwait(false);
        }

        await WaitUntilReadyAsync(cancellationToken).ConfigureAwait(false);
        await ProbeAsync(ServerV4, cancellationToken).ConfigureAwait(false);
        await ProbeAsync(ServerV6, cancellationToken).ConfigureAwait(false);
    }

    private async Task WaitUntilReadyAsync(CancellationToken cancellationToken)
    {
        var elapsed = Stopwatch.StartNew();
        while (true)
        {
            var notReady = new List<string>();
            foreach (var ns in new[] { Server, Client })
            {
                var link = await NetworkNamespace.Ip(cancellationToken, "-n", ns.Name, "link", "show", "dev", Link).ConfigureAwait(false);
                if (!link.StandardOutput.Contains("LOWER_UP", StringComparison.Ordinal))
                {
                    notReady.Add($"{ns.Name}: {Link} has no carrier");
                }

                // Only our own addresses matter; the link-local one may stay tentative for a while.
                var tentative = await NetworkNamespace.Ip(cancellationToken, "-n", ns.Name, "-6", "addr", "show", "dev", Link, "tentative")
                    .ConfigureAwait(false);
                if (tentative.StandardOutput.Contains("2001:db8:", StringComparison.Ordinal))
                {
                    notReady.Add($"{ns.Name}: IPv6 address still tentative");
                }
            }

            if (notReady.Count == 0)
            {
                return;
            }

            if (elapsed.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new InvalidOperationException($"The lab link did not come up within 10 s: {string.Join("; ", notReady)}.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken).ConfigureAwait(false);
        }
    }

    // One TCP connection from the client to a listener in the server proves addresses, routes and neighbours work.
    private async Task ProbeAsync(IPAddress serverAddress, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        using var listener = Server.CreateSocket(serverAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(serverAddress, 0));
        listener.Listen();
        using var client = Client.CreateSocket(serverAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            var accept = listener.AcceptAsync(timeout.Token);
            await client.ConnectAsync(listener.LocalEndPoint!, timeout.Token).ConfigureAwait(false);
            using var accepted = await accept.ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new InvalidOperationException(
                $"The lab link is up but a TCP connection from {Client.Name} to {listener.LocalEndPoint} in {Server.Name} failed: {e.Message}", e);
        }
    }
}
