using System.Net;

namespace Switchover.Lab;

/// <summary>
/// The migration lab: a peer on the internet, a router, the old host and the new host, each in its own network
/// namespace, on three links through the router. The old host's only address is also its tunnel endpoint.
/// Documentation addresses only. Disposing deletes all four namespaces.
/// </summary>
public sealed class FourHostLab : IAsyncDisposable
{
    /// <summary>Each host's one link to the router.</summary>
    public const string Link = "eth0";

    private FourHostLab(NetworkNamespace peer, NetworkNamespace router, NetworkNamespace old, NetworkNamespace @new)
    {
        Peer = peer;
        Router = router;
        Old = old;
        New = @new;
    }

    public NetworkNamespace Peer { get; }

    public NetworkNamespace Router { get; }

    public NetworkNamespace Old { get; }

    public NetworkNamespace New { get; }

    public IPAddress PeerV4 { get; } = IPAddress.Parse("198.51.100.10");

    public IPAddress PeerV6 { get; } = IPAddress.Parse("2001:db8:100::10");

    public IPAddress OldV4 { get; } = IPAddress.Parse("192.0.2.1");

    public IPAddress OldV6 { get; } = IPAddress.Parse("2001:db8:2::1");

    public IPAddress NewV4 { get; } = IPAddress.Parse("203.0.113.1");

    public IPAddress NewV6 { get; } = IPAddress.Parse("2001:db8:3::1");

    public IEnumerable<NetworkNamespace> Hosts => [Peer, Router, Old, New];

    public static async Task<FourHostLab> CreateAsync(CancellationToken cancellationToken)
    {
        var created = new List<NetworkNamespace>();
        try
        {
            foreach (var prefix in new[] { "so-p", "so-r", "so-o", "so-n" })
            {
                created.Add(await NetworkNamespace.CreateAsync(prefix, cancellationToken).ConfigureAwait(false));
            }

            var lab = new FourHostLab(created[0], created[1], created[2], created[3]);
            await lab.ConfigureAsync(cancellationToken).ConfigureAwait(false);
            return lab;
        }
        catch
        {
            foreach (var ns in created)
            {
                await ns.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var ns in Hosts.Reverse())
        {
            await ns.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task ConfigureAsync(CancellationToken cancellationToken)
    {
        (NetworkNamespace Host, string RouterSide, string V4, string V6, string RouterV4, string RouterV6)[] links =
        [
            (Peer, "p0", "198.51.100.10/24", "2001:db8:100::10/64", "198.51.100.1/24", "2001:db8:100::1/64"),
            (Old, "o0", "192.0.2.1/24", "2001:db8:2::1/64", "192.0.2.254/24", "2001:db8:2::fe/64"),
            (New, "n0", "203.0.113.1/24", "2001:db8:3::1/64", "203.0.113.254/24", "2001:db8:3::fe/64"),
        ];
        await Router.RunAsync("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"], cancellationToken).ConfigureAwait(false);
        await Router.RunAsync("sysctl", ["-q", "-w", "net.ipv6.conf.all.forwarding=1"], cancellationToken).ConfigureAwait(false);
        foreach (var (host, routerSide, v4, v6, routerV4, routerV6) in links)
        {
            await NetworkNamespace.Ip(cancellationToken, "-n", Router.Name, "link", "add", routerSide, "type", "veth", "peer", "name", Link, "netns", host.Name)
                .ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", Router.Name, "addr", "add", routerV4, "dev", routerSide).ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", Router.Name, "-6", "addr", "add", routerV6, "dev", routerSide, "nodad").ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", Router.Name, "link", "set", routerSide, "up").ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", host.Name, "addr", "add", v4, "dev", Link).ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", host.Name, "-6", "addr", "add", v6, "dev", Link, "nodad").ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", host.Name, "link", "set", Link, "up").ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", host.Name, "route", "add", "default", "via", routerV4.Split('/')[0]).ConfigureAwait(false);
            await NetworkNamespace.Ip(cancellationToken, "-n", host.Name, "-6", "route", "add", "default", "via", routerV6.Split('/')[0]).ConfigureAwait(false);
        }
    }
}
