using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Integration;

/// <summary>
/// Two hosts, <see cref="A"/> and <see cref="B"/>, on one veth link named eth0 on both sides (outer addresses
/// 198.51.100.1/.2 and 2001:db8:100::1/::2), with a userspace GRE tunnel "gre1" between them over IPv4 or IPv6 and
/// inner addresses 203.0.113.1/.2 and 2001:db8:200::1/::2 on the tunnel. The tunnels run in this process, their
/// descriptors created inside each namespace. Disposing stops the tunnels and deletes both namespaces.
/// </summary>
internal sealed class GreLab : IAsyncDisposable
{
    public const string TunnelName = "gre1";
    public const string Link = "eth0";

    private GreLab(NetworkNamespace a, NetworkNamespace b, AddressFamily outer)
    {
        A = a;
        B = b;
        OuterFamily = outer;
    }

    public NetworkNamespace A { get; }

    public NetworkNamespace B { get; }

    public AddressFamily OuterFamily { get; }

    public UserspaceGreTunnel? TunnelA { get; private set; }

    public UserspaceGreTunnel? TunnelB { get; private set; }

    public static IPAddress OuterA4 { get; } = IPAddress.Parse("198.51.100.1");

    public static IPAddress OuterB4 { get; } = IPAddress.Parse("198.51.100.2");

    /// <summary>A second address of B, which A's tunnel does not know: the source of stray GRE.</summary>
    public static IPAddress StrayB4 { get; } = IPAddress.Parse("198.51.100.3");

    public static IPAddress OuterA6 { get; } = IPAddress.Parse("2001:db8:100::1");

    public static IPAddress OuterB6 { get; } = IPAddress.Parse("2001:db8:100::2");

    public static IPAddress StrayB6 { get; } = IPAddress.Parse("2001:db8:100::3");

    public static IPAddress InnerA4 { get; } = IPAddress.Parse("203.0.113.1");

    public static IPAddress InnerB4 { get; } = IPAddress.Parse("203.0.113.2");

    public static IPAddress InnerA6 { get; } = IPAddress.Parse("2001:db8:200::1");

    public static IPAddress InnerB6 { get; } = IPAddress.Parse("2001:db8:200::2");

    public IPAddress OuterA => OuterFamily == AddressFamily.InterNetwork ? OuterA4 : OuterA6;

    public IPAddress OuterB => OuterFamily == AddressFamily.InterNetwork ? OuterB4 : OuterB6;

    public IPAddress StrayB => OuterFamily == AddressFamily.InterNetwork ? StrayB4 : StrayB6;

    /// <summary>Builds both hosts and the link; with <paramref name="startTunnels"/>, a tunnel in each and the inner addresses.</summary>
    public static async Task<GreLab> CreateAsync(AddressFamily outer, uint? key, CancellationToken cancellationToken,
        Func<TunnelOptions, TunnelOptions>? customize = null, bool startTunnels = true)
    {
        Root.Require();
        var a = await NetworkNamespace.CreateAsync("so-ga", cancellationToken);
        NetworkNamespace? b = null;
        GreLab? lab = null;
        try
        {
            b = await NetworkNamespace.CreateAsync("so-gb", cancellationToken);
            lab = new GreLab(a, b, outer);
            await lab.LinkAsync(cancellationToken);
            if (startTunnels)
            {
                customize ??= o => o;
                await lab.StartTunnelsAsync(customize(lab.OptionsFor(lab.A, key)), customize(lab.OptionsFor(lab.B, key)), cancellationToken);
            }

            return lab;
        }
        catch
        {
            if (lab is not null)
            {
                await lab.DisposeAsync();
            }
            else
            {
                if (b is not null)
                {
                    await b.DisposeAsync();
                }

                await a.DisposeAsync();
            }

            throw;
        }
    }

    public TunnelOptions OptionsFor(NetworkNamespace host, uint? key) => new()
    {
        Name = TunnelName,
        Local = host == A ? OuterA : OuterB,
        Remote = host == A ? OuterB : OuterA,
        Key = key,
        NetworkNamespace = host.Name,
    };

    public async Task StartTunnelsAsync(TunnelOptions a, TunnelOptions b, CancellationToken cancellationToken)
    {
        TunnelA = await UserspaceGreTunnel.StartAsync(a, cancellationToken);
        TunnelB = await UserspaceGreTunnel.StartAsync(b, cancellationToken);
        await AddInnerAddressesAsync(cancellationToken);
    }

    /// <summary>The inner addresses on gre1 in both hosts, whichever dataplane created it.</summary>
    public async Task AddInnerAddressesAsync(CancellationToken cancellationToken)
    {
        foreach (var (ns, v4, v6) in new[] { (A, InnerA4, InnerA6), (B, InnerB4, InnerB6) })
        {
            await IpAsync(ns, cancellationToken, "addr", "add", v4 + "/24", "dev", TunnelName);
            await IpAsync(ns, cancellationToken, "-6", "addr", "add", v6 + "/64", "dev", TunnelName, "nodad");
        }
    }

    public static Task IpAsync(NetworkNamespace ns, CancellationToken cancellationToken, params string[] arguments) =>
        ns.RunAsync("ip", arguments, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (TunnelA is not null)
        {
            await TunnelA.DisposeAsync();
        }

        if (TunnelB is not null)
        {
            await TunnelB.DisposeAsync();
        }

        await B.DisposeAsync();
        await A.DisposeAsync();
    }

    /// <summary>Waits until <paramref name="condition"/> holds of the counters, or fails with what they were.</summary>
    public static async Task<TunnelCounters> WaitForCountersAsync(UserspaceGreTunnel tunnel, Func<TunnelCounters, bool> condition, string what)
    {
        var elapsed = Stopwatch.StartNew();
        while (true)
        {
            var counters = tunnel.Counters;
            if (condition(counters))
            {
                return counters;
            }

            if (elapsed.Elapsed > TimeSpan.FromSeconds(5))
            {
                Assert.Fail($"{tunnel.Options.Name} in {tunnel.Options.NetworkNamespace}: {what} did not happen within 5 s; counters: {counters}");
            }

            await Task.Delay(20);
        }
    }

    private async Task LinkAsync(CancellationToken cancellationToken)
    {
        await IpAsync(A, cancellationToken, "link", "add", Link, "type", "veth", "peer", "name", Link, "netns", B.Name);
        foreach (var (ns, v4, v6) in new[] { (A, OuterA4, OuterA6), (B, OuterB4, OuterB6) })
        {
            await IpAsync(ns, cancellationToken, "addr", "add", v4 + "/24", "dev", Link);
            await IpAsync(ns, cancellationToken, "-6", "addr", "add", v6 + "/64", "dev", Link, "nodad");
            await IpAsync(ns, cancellationToken, "link", "set", Link, "up");
        }

        await IpAsync(B, cancellationToken, "addr", "add", StrayB4 + "/24", "dev", Link);
        await IpAsync(B, cancellationToken, "-6", "addr", "add", StrayB6 + "/64", "dev", Link, "nodad");

        var elapsed = Stopwatch.StartNew();
        foreach (var ns in new[] { A, B })
        {
            while (!(await ns.RunAsync("ip", ["link", "show", "dev", Link], cancellationToken)).StandardOutput.Contains("LOWER_UP", StringComparison.Ordinal))
            {
                Assert.True(elapsed.Elapsed < TimeSpan.FromSeconds(10), $"{Link} in {ns.Name} got no carrier within 10 s");
                await Task.Delay(20, cancellationToken);
            }
        }
    }
}
