using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Integration;

[Collection(GreLabGroup.Name)]
public sealed class UserspaceTunnelTests
{
    private const uint Key = 0x5A5A;

    /// <summary>Both outer families, each with GRE and with GRE in UDP.</summary>
    public static TheoryData<AddressFamily, TunnelEncapsulation> OutersAndEncapsulations { get; } = new()
    {
        { AddressFamily.InterNetwork, TunnelEncapsulation.Gre },
        { AddressFamily.InterNetworkV6, TunnelEncapsulation.Gre },
        { AddressFamily.InterNetwork, TunnelEncapsulation.GreInUdp },
        { AddressFamily.InterNetworkV6, TunnelEncapsulation.GreInUdp },
    };

    [Theory(Timeout = 90_000)]
    [MemberData(nameof(OutersAndEncapsulations))]
    public async Task Tcp_and_udp_cross_the_tunnel_both_ways_with_IPv4_and_IPv6_inside(AddressFamily outer, TunnelEncapsulation encapsulation)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { Encapsulation = encapsulation });
        foreach (var (innerA, innerB) in new[] { (GreLab.InnerA4, GreLab.InnerB4), (GreLab.InnerA6, GreLab.InnerB6) })
        {
            Assert.Equal(innerA, await Traffic.TcpEchoAsync(lab.B, innerB, lab.A, 10_000));
            Assert.Equal(innerB, await Traffic.TcpEchoAsync(lab.A, innerA, lab.B, 10_000));
            Assert.Equal(innerA, await Traffic.UdpRoundTripAsync(lab.B, innerB, lab.A));
            Assert.Equal(innerB, await Traffic.UdpRoundTripAsync(lab.A, innerA, lab.B));
        }

        foreach (var tunnel in new[] { lab.TunnelA!, lab.TunnelB! })
        {
            var counters = tunnel.Counters;
            Assert.True(counters.TxPackets > 20 && counters.RxPackets > 20 && counters.TxBytes > 40_000 && counters.RxBytes > 40_000, counters.ToString());
            Assert.True(counters is { RxDropped: 0, RxErrors: 0, TxErrors: 0 }, counters.ToString());
        }
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(OutersAndEncapsulations))]
    public async Task A_bulk_transfer_far_larger_than_the_MTU_arrives_intact_both_ways(AddressFamily outer, TunnelEncapsulation encapsulation)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { Encapsulation = encapsulation });
        Assert.Equal((outer == AddressFamily.InterNetwork ? 1472 : 1452) - (encapsulation == TunnelEncapsulation.GreInUdp ? 8 : 0), lab.TunnelA!.Options.EffectiveMtu);
        await Traffic.TcpBulkAsync(lab.B, GreLab.InnerB4, lab.A, 16 << 20);
        await Traffic.TcpBulkAsync(lab.A, GreLab.InnerA6, lab.B, 4 << 20);

        // Datagrams larger than the tunnel MTU are fragmented inside, and the fragments cross separately.
        Assert.Equal(GreLab.InnerA4, await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB4, lab.A, size: 8000));
        Assert.Equal(GreLab.InnerA6, await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB6, lab.A, size: 8000));

        var counters = lab.TunnelB!.Counters;
        Assert.True(counters.RxBytes > 16 << 20, counters.ToString());
        Assert.True(counters is { RxDropped: 0, RxErrors: 0, TxErrors: 0 }, counters.ToString());

        // Over fifteen thousand packets through each tunnel, and the packet loops allocated (next to) nothing: the first
        // tunnel of a process sees a few dozen bytes the runtime allocates once per thread; one object per packet would
        // be hundreds of kilobytes.
        await lab.TunnelA!.DisposeAsync();
        await lab.TunnelB.DisposeAsync();
        Assert.True(lab.TunnelB.Counters.RxPackets + lab.TunnelB.Counters.TxPackets > 15_000, lab.TunnelB.Counters.ToString());
        foreach (var (tx, rx) in new[] { lab.TunnelA.LoopAllocations, lab.TunnelB.LoopAllocations })
        {
            Assert.True(tx is >= 0 and < 1024 && rx is >= 0 and < 1024, $"the packet loops allocated {tx} and {rx} bytes");
        }
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(OutersAndEncapsulations))]
    public async Task A_bulk_TCP_transfer_crosses_the_TUN_devices_in_super_packets_and_the_wire_in_MTU_sized_GRE(AddressFamily outer, TunnelEncapsulation encapsulation)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { Encapsulation = encapsulation });
        Assert.Equal(Interop.Libc.TUN_F_CSUM | Interop.Libc.TUN_F_TSO4 | Interop.Libc.TUN_F_TSO6,
            lab.TunnelA!.Offloads & (Interop.Libc.TUN_F_CSUM | Interop.Libc.TUN_F_TSO4 | Interop.Libc.TUN_F_TSO6));
        foreach (var inner in new[] { GreLab.InnerB4, GreLab.InnerB6 })
        {
            var before = (lab.TunnelA.Counters, lab.TunnelA.TunCalls, lab.TunnelB!.Counters, lab.TunnelB.TunCalls);
            await Traffic.TcpBulkAsync(lab.B, inner, lab.A, 16 << 20);
            var (a, b) = (lab.TunnelA.Counters, lab.TunnelB.Counters);
            var readsA = lab.TunnelA.TunCalls.Reads - before.Item2.Reads;
            var writesB = lab.TunnelB.TunCalls.Writes - before.Item4.Writes;
            var packetsA = a.TxPackets - before.Item1.TxPackets;
            var packetsB = b.RxPackets - before.Item3.RxPackets;

            // TSO: A's TUN device hands over far more than one MTU per read; every GRE packet still fits the link MTU.
            Assert.True(packetsA > 4 * readsA, $"{inner}: {packetsA} GRE packets from {readsA} TUN reads");
            Assert.True((double)(a.TxBytes - before.Item1.TxBytes) / packetsA <= lab.TunnelA.Options.EffectiveMtu, a.ToString());

            // GRO: B writes fewer super-packets than it receives GRE packets, and delivers all of them.
            Assert.True(packetsB > 1.5 * writesB, $"{inner}: {packetsB} GRE packets in {writesB} TUN writes");
            Assert.True(b is { RxDropped: 0, RxErrors: 0 } && a.TxErrors == 0, $"{a}\n{b}");
        }
    }

    [Theory(Timeout = 60_000)]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    public async Task Gre_with_a_wrong_key_no_key_or_a_bad_checksum_is_dropped_and_counted(AddressFamily outer)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None);
        using var receiver = lab.A.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(GreLab.InnerA4, 0));
        var port = ((IPEndPoint)receiver.LocalEndPoint!).Port;
        using var sender = await RawGreSocket.OpenAsync(lab.B, lab.OuterB);
        var inner = Traffic.Udp4Packet(GreLab.InnerB4, GreLab.InnerA4, port, Encoding.ASCII.GetBytes("crafted"));

        // Control: the same crafted packet with the right key is delivered, so the drops below are the key's doing.
        Send(sender, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key), inner);
        Assert.True(await Traffic.ReceivesAsync(receiver, TimeSpan.FromSeconds(5)), "a crafted packet with the right key was not delivered");

        Send(sender, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key + 1), inner);
        Send(sender, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4), inner);
        await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c.RxWrongKey == 2, "two wrong-key drops");

        var corrupt = new byte[new GreHeader(GreCodec.ProtocolIPv4, Key, HasChecksum: true).Length + inner.Length];
        GreCodec.Encode(new GreHeader(GreCodec.ProtocolIPv4, Key, HasChecksum: true), inner, corrupt);
        corrupt[^1] ^= 0x01;
        sender.Send(lab.OuterA, corrupt);
        Send(sender, lab.OuterA, new GreHeader(0x6558, Key), inner); // Ethernet inside: not ours
        var counters = await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c.RxMalformed == 2, "two malformed drops");

        Assert.False(await Traffic.ReceivesAsync(receiver, TimeSpan.FromMilliseconds(500)), "a dropped packet was delivered");
        Assert.Equal(0, counters.RxStray);
    }

    [Theory(Timeout = 120_000)]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    public async Task Gre_in_udp_over_a_link_without_checksum_offload_falls_back_to_one_datagram_per_send(AddressFamily outer)
    {
        // Without the link's checksum offload the kernel refuses UDP segmentation (EIO for the whole send), as on a NIC
        // with `ethtool -K tx off`: the tunnel must notice and send its packets one by one, losing none after that.
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { Encapsulation = TunnelEncapsulation.GreInUdp });
        await lab.A.RunAsync("ethtool", ["-K", GreLab.Link, "tx", "off"], CancellationToken.None);
        await Traffic.TcpBulkAsync(lab.B, GreLab.InnerB4, lab.A, 8 << 20);
        await Traffic.TcpBulkAsync(lab.B, GreLab.InnerB6, lab.A, 8 << 20);

        var (a, b) = (lab.TunnelA!.Counters, lab.TunnelB!.Counters);
        Assert.True(b.RxBytes > 16 << 20 && b is { RxDropped: 0, RxErrors: 0 }, $"{a}\n{b}");
        Assert.True(a.TxErrors == 0, $"sends failed: {a}");

        // Linux 6.6 and later segment in software without the offload; before, the tunnel must have seen EIO and fallen back.
        Assert.Equal(Environment.OSVersion.Version >= new Version(6, 6), lab.TunnelA.SegmentsUdp);
    }

    [Theory(Timeout = 60_000)]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    public async Task Gre_in_udp_is_taken_only_from_the_remote_port_4754_and_with_the_right_key(AddressFamily outer)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { Encapsulation = TunnelEncapsulation.GreInUdp });
        using var receiver = lab.A.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(GreLab.InnerA4, 0));
        var port = ((IPEndPoint)receiver.LocalEndPoint!).Port;
        var inner = Traffic.Udp4Packet(GreLab.InnerB4, GreLab.InnerA4, port, Encoding.ASCII.GetBytes("crafted"));
        byte[] Datagram(GreHeader header)
        {
            var datagram = new byte[header.Length + inner.Length];
            GreCodec.Encode(header, inner, datagram);
            return datagram;
        }

        // B's tunnel gives up port 4754 of B's address to a plain UDP socket, which crafts what A receives.
        await lab.TunnelB!.DisposeAsync();
        var a = new IPEndPoint(lab.OuterA, TunnelOptions.GreInUdpPort);
        using var remote = lab.B.CreateSocket(outer, SocketType.Dgram, ProtocolType.Udp);
        remote.Bind(new IPEndPoint(lab.OuterB, TunnelOptions.GreInUdpPort));
        remote.SendTo(Datagram(new GreHeader(GreCodec.ProtocolIPv4, Key)), a);
        Assert.True(await Traffic.ReceivesAsync(receiver, TimeSpan.FromSeconds(5)), "a crafted datagram with the right key was not delivered");

        remote.SendTo(Datagram(new GreHeader(GreCodec.ProtocolIPv4, Key + 1)), a);
        remote.SendTo(Datagram(new GreHeader(GreCodec.ProtocolIPv4)), a);
        remote.SendTo(Datagram(new GreHeader(0x6558, Key)), a);
        var counters = await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c is { RxWrongKey: 2, RxMalformed: 1 }, "two wrong-key drops and one malformed");

        // From another address of B, or another port of B's address, the kernel does not deliver to the connected socket.
        using var stray = lab.B.CreateSocket(outer, SocketType.Dgram, ProtocolType.Udp);
        stray.Bind(new IPEndPoint(lab.StrayB, TunnelOptions.GreInUdpPort));
        using var otherPort = lab.B.CreateSocket(outer, SocketType.Dgram, ProtocolType.Udp);
        otherPort.Bind(new IPEndPoint(lab.OuterB, 0));
        for (var i = 0; i < 3; i++)
        {
            stray.SendTo(Datagram(new GreHeader(GreCodec.ProtocolIPv4, Key)), a);
            otherPort.SendTo(Datagram(new GreHeader(GreCodec.ProtocolIPv4, Key)), a);
        }

        Assert.False(await Traffic.ReceivesAsync(receiver, TimeSpan.FromMilliseconds(500)), "a dropped datagram was delivered");
        Assert.Equal(counters.RxPackets, lab.TunnelA!.Counters.RxPackets);
    }

    [Fact(Timeout = 60_000)]
    public async Task Gre_behind_the_tunnel_encapsulation_limit_option_that_ip6gre_sends_by_default_is_delivered()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetworkV6, Key, CancellationToken.None);
        using var receiver = lab.A.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(GreLab.InnerA4, 0));
        var port = ((IPEndPoint)receiver.LocalEndPoint!).Port;
        using var sender = await RawGreSocket.OpenAsync(lab.B, lab.OuterB);

        // What ip6gre without `encaplimit none` puts between the IPv6 header and GRE (ip6_gre.c, init_tel_txopt): a
        // destination options header with the Tunnel Encapsulation Limit option (RFC 2473 §5.1, type 4, limit 4), PadN.
        sender.SetDestinationOptions([0, 0, 0x04, 0x01, 0x04, 0x01, 0x01, 0x00]);
        for (var i = 0; i < 3; i++)
        {
            Send(sender, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key), Traffic.Udp4Packet(GreLab.InnerB4, GreLab.InnerA4, port, Encoding.ASCII.GetBytes("limit")));
        }

        var counters = await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c.RxPackets >= 3, "three packets received");
        Assert.True(await Traffic.ReceivesAsync(receiver, TimeSpan.FromSeconds(5)), $"GRE behind the option was not delivered: {counters}");
        Assert.Equal(0, counters.RxMalformed + counters.RxStray + counters.RxWrongKey);
    }

    [Theory(Timeout = 60_000)]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    public async Task Gre_from_a_source_other_than_the_remote_is_dropped_and_counted_as_stray(AddressFamily outer)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None);
        using var receiver = lab.A.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(GreLab.InnerA4, 0));
        var port = ((IPEndPoint)receiver.LocalEndPoint!).Port;
        var inner = Traffic.Udp4Packet(GreLab.InnerB4, GreLab.InnerA4, port, Encoding.ASCII.GetBytes("stray"));

        using var stray = await RawGreSocket.OpenAsync(lab.B, lab.StrayB);
        for (var i = 0; i < 3; i++)
        {
            Send(stray, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key), inner);
        }

        var counters = await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c.RxStray == 3, "three stray drops");
        Assert.False(await Traffic.ReceivesAsync(receiver, TimeSpan.FromMilliseconds(500)), "stray GRE was delivered");
        Assert.Equal(0, counters.RxWrongKey + counters.RxMalformed);

        // Control: from the remote's address the same packet is delivered.
        using var remote = await RawGreSocket.OpenAsync(lab.B, lab.OuterB);
        Send(remote, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key), inner);
        Assert.True(await Traffic.ReceivesAsync(receiver, TimeSpan.FromSeconds(5)), "the same packet from the remote was not delivered");
    }

    [Theory(Timeout = 60_000)]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    public async Task Outer_packets_carry_the_configured_firewall_mark_and_ttl_so_policy_routing_can_steer_them(AddressFamily outer)
    {
        await using var lab = await GreLab.CreateAsync(outer, Key, CancellationToken.None, customize: o => o with { FirewallMark = 0x2a, Ttl = 33 });

        // Counted in A's own namespace, which goes away with the test.
        var family = outer == AddressFamily.InterNetwork ? "ip" : "ip6";
        string[] header = outer == AddressFamily.InterNetwork ? ["ip", "protocol", "gre", "ip", "ttl", "33"] : ["ip6", "nexthdr", "gre", "ip6", "hoplimit", "33"];
        await lab.A.RunAsync("nft", ["add", "table", family, "so_mark"], CancellationToken.None);
        await lab.A.RunAsync("nft", ["add", "chain", family, "so_mark", "out", "{ type filter hook output priority 0; policy accept; }"], CancellationToken.None);
        await lab.A.RunAsync("nft", ["add", "rule", family, "so_mark", "out", "meta", "mark", "0x2a", .. header, "counter"], CancellationToken.None);
        for (var i = 0; i < 5; i++)
        {
            await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB4, lab.A);
        }

        var listing = await lab.A.RunAsync("nft", ["list", "table", family, "so_mark"], CancellationToken.None);
        var packets = System.Text.RegularExpressions.Regex.Match(listing.StandardOutput, @"counter packets (\d+)");
        Assert.True(packets.Success && int.Parse(packets.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= 5, listing.StandardOutput);
    }

    [Fact(Timeout = 60_000)]
    public async Task Packets_for_an_interface_that_is_down_are_counted_as_errors_not_lost_silently()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetwork, Key, CancellationToken.None);
        using var sender = await RawGreSocket.OpenAsync(lab.B, lab.OuterB);
        await GreLab.IpAsync(lab.A, CancellationToken.None, "link", "set", GreLab.TunnelName, "down");
        var before = lab.TunnelA!.Counters;

        // Writing to a TUN device that is down fails with EIO. (B's kernel may send its own IPv6 chatter meanwhile.)
        Send(sender, lab.OuterA, new GreHeader(GreCodec.ProtocolIPv4, Key), Traffic.Udp4Packet(GreLab.InnerB4, GreLab.InnerA4, 9, [1]));
        var counters = await GreLab.WaitForCountersAsync(lab.TunnelA!, c => c.RxErrors > before.RxErrors, "a receive error");
        Assert.Equal(before.RxPackets, counters.RxPackets);
        Assert.False(lab.TunnelA!.Completion.IsCompleted, "a down interface must not stop the tunnel");
    }

    [Fact(Timeout = 60_000)]
    public async Task Disposing_removes_the_interface_and_deleting_it_under_the_tunnel_faults_the_tunnel()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetwork, Key, CancellationToken.None);
        await lab.TunnelB!.DisposeAsync();
        await lab.TunnelB.Completion;
        var show = await lab.B.TryRunAsync("ip", ["link", "show", "dev", GreLab.TunnelName], CancellationToken.None);
        Assert.NotEqual(0, show.ExitCode);

        await GreLab.IpAsync(lab.A, CancellationToken.None, "link", "del", GreLab.TunnelName);
        var failure = await Assert.ThrowsAnyAsync<TunnelException>(() => lab.TunnelA!.Completion.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains(GreLab.TunnelName, failure.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_local_address_the_host_does_not_have_is_refused_with_what_to_do()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetwork, Key, CancellationToken.None, startTunnels: false);
        var options = lab.OptionsFor(lab.A, Key) with { Local = IPAddress.Parse("192.0.2.77") };
        var error = await Assert.ThrowsAsync<TunnelException>(() => UserspaceGreTunnel.StartAsync(options, CancellationToken.None));
        Assert.Contains("192.0.2.77 is not an address of this host", error.Message, StringComparison.Ordinal);

        // Nothing is left behind: the TUN device went with its descriptor.
        var show = await lab.A.TryRunAsync("ip", ["link", "show", "dev", GreLab.TunnelName], CancellationToken.None);
        Assert.NotEqual(0, show.ExitCode);
    }

    private static void Send(RawGreSocket socket, IPAddress destination, GreHeader header, byte[] inner)
    {
        var packet = new byte[header.Length + inner.Length];
        GreCodec.Encode(header, inner, packet);
        socket.Send(destination, packet);
    }
}
