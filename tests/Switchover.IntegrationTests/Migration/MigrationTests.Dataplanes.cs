using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.IntegrationTests.Migration;

/// <summary>
/// The migration flow over each pairing of dataplanes: kernel GRE (created by `migrate setup` itself, where the kernel
/// has it) or userspace GRE (a tunnel started first) on each host, with an IPv4 or an IPv6 outer. Our machines' kernel
/// has no ip_gre, so here the theory runs the userspace pairings; the VM lab (KernelGreVmTests) runs the kernel and
/// mixed ones in a VM with Debian's stock kernel, through SWITCHOVER_MIGRATION_DATAPLANES. Each pairing runs over plain
/// GRE (IP protocol 47) or GRE in UDP (RFC 8086, port 4754; the kernel's FOU against our userspace sockets).
/// </summary>
public sealed partial class MigrationTests
{
    /// <summary>
    /// Which pairings the theory runs: "OLD:NEW:OUTER[:ENCAPSULATION]" words, e.g. "kernel:userspace:ipv6" or
    /// "kernel:userspace:ipv4:udp"; the encapsulation is gre (the default) or udp (GRE in UDP, `--encapsulation udp`). A
    /// kernel new host with an IPv6 outer ("*:kernel:ipv6") is refused at setup when the old host's only address is also
    /// its tunnel end (ip6gre will not send a packet whose inner source is its remote end), which the theory asserts; it
    /// then gives the old host a second address for the tunnel's end, as the refusal says, and runs the flow over it.
    /// </summary>
    public const string PairingsVariable = "SWITCHOVER_MIGRATION_DATAPLANES";

    private const string UserspacePairings = "userspace:userspace:ipv4 userspace:userspace:ipv6 userspace:userspace:ipv4:udp userspace:userspace:ipv6:udp";
    private const int Port = 25;
    private const int PeerPort = 7000;

    /// <summary>GRE in UDP's port by RFC 8086, written out: the wire is checked against the RFC, not against our constant.</summary>
    private const int GreInUdpPort = 4754;

    /// <summary>Stray GRE packets each host has dropped so far.</summary>
    private readonly Dictionary<NetworkNamespace, long> _strays = [];

    public static TheoryData<string, string, string, string> Pairings()
    {
        var data = new TheoryData<string, string, string, string>();
        var words = (Environment.GetEnvironmentVariable(PairingsVariable) is { Length: > 0 } chosen ? chosen : UserspacePairings)
            .Split([' ', ','], StringSplitOptions.RemoveEmptyEntries);
        foreach (var word in words)
        {
            var parts = word.Split(':');
            if (parts.Length is not (3 or 4) || parts[..2].Any(p => p is not ("kernel" or "userspace")) || parts[2] is not ("ipv4" or "ipv6") ||
                parts.Length == 4 && parts[3] is not ("gre" or "udp"))
            {
                throw new ArgumentException($"{PairingsVariable}: '{word}' is not OLD:NEW:OUTER[:ENCAPSULATION] with kernel|userspace, ipv4|ipv6 and gre|udp.");
            }

            data.Add(parts[0], parts[1], parts[2], parts.Length == 4 ? parts[3] : "gre");
        }

        return data;
    }

    [Theory(Timeout = 900_000)]
    [MemberData(nameof(Pairings))]
    public async Task A_moved_tuple_keeps_its_address_the_client_address_and_its_outbound_source_and_teardown_restores_both_hosts_over_each_dataplane(
        string oldDataplane, string newDataplane, string outer, string encapsulation)
    {
        var v6 = outer == "ipv6";
        // GRE in UDP: 8 bytes more per packet, the same flow; the UDP header travels between the outer IP and GRE headers.
        var udp = encapsulation == "udp";
        string[] encapsulate = udp ? ["--encapsulation", "udp"] : [];
        var (movedAddress, newOuter, peer) = v6 ? (_lab.OldV6, _lab.NewV6, _lab.PeerV6) : (_lab.OldV4, _lab.NewV4, _lab.PeerV4);
        // The moved address is the old host's only one, also its tunnel end: the case the outer-GRE rule is for.
        var oldOuter = movedAddress;
        var moved = new IPEndPoint(movedAddress, Port);
        var tuple = v6 ? $"tcp/[{movedAddress}]:{Port}" : $"tcp/{movedAddress}:{Port}";
        var mtu = ((v6 ? 1452 : 1472) - (udp ? 8 : 0)).ToString(CultureInfo.InvariantCulture);
        var peerPrefix = v6 ? $"[{peer}]:" : $"{peer}:";
        if (newDataplane == "kernel" && v6)
        {
            // The kernel's ip6gre drops every packet whose inner source is the tunnel's remote end, here the moved address
            // of every reply (MigrationPlanner.ValidateKernelTunnel): setup refuses the new host, says what to run, changes nothing.
            var newUntouched = await SnapshotAsync(_lab.New);
            var refused = await CliAsync(_lab.New, ["migrate", "setup", "--name", _name, "--side", "new", "--tunnel", Tunnel, "--local", $"{newOuter}",
                "--remote", $"{oldOuter}", "--key", $"{Key}", "--mtu", mtu, "--tuple", tuple, .. encapsulate]);
            Assert.True(refused.ExitCode != 0, $"setup of a kernel ip6gre new host whose remote end is moved was not refused:\n{refused.StandardOutput}");
            Assert.Contains("drops every IPv6 packet whose source is the tunnel's remote end", refused.StandardError, StringComparison.Ordinal);
            Assert.Contains("switchover tunnel run --dataplane userspace", refused.StandardError, StringComparison.Ordinal);
            Assert.Contains("give the old host a second IPv6 address for its tunnel end", refused.StandardError, StringComparison.Ordinal);
            Assert.Equal(newUntouched, await SnapshotAsync(_lab.New));

            // What the refusal offers instead, and what a rented box with a /64 can do: a second address of the old host's
            // own for the tunnel's end, which is not moved. Then the kernel's ip6gre carries the new host's replies.
            oldOuter = IPAddress.Parse("2001:db8:2::2");
            await _lab.Old.RunAsync("ip", ["-6", "addr", "add", $"{oldOuter}/64", "dev", FourHostLab.Link, "nodad"], Token);
        }

        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        using var oldMail = new GreeterServer(_lab.Old, moved, "old-25");
        using var peerServer = new GreeterServer(_lab.Peer, new IPEndPoint(peer, PeerPort), "peer-7000");

        await using (var userspace = new UserspaceSides())
        {
            // A userspace host's tunnel runs before setup; a kernel host's is created by setup (no device, a kernel with GRE).
            foreach (var (host, dataplane, local, remote) in new[] { (_lab.Old, oldDataplane, oldOuter, newOuter), (_lab.New, newDataplane, newOuter, oldOuter) })
            {
                if (dataplane == "userspace")
                {
                    userspace.Tunnels[host] = await UserspaceGreTunnel.StartAsync(new TunnelOptions
                    {
                        Name = Tunnel, Local = local, Remote = remote, Key = Key, Mtu = int.Parse(mtu, CultureInfo.InvariantCulture), NetworkNamespace = host.Name,
                        Encapsulation = udp ? TunnelEncapsulation.GreInUdp : TunnelEncapsulation.Gre,
                    }, Token);
                }
            }

            await Task.WhenAll(
                MigrateAsync(_lab.Old, "setup", ["--side", "old", "--tunnel", Tunnel, "--local", $"{oldOuter}", "--remote", $"{newOuter}", "--key", $"{Key}", "--mtu", mtu,
                    .. encapsulate]),
                MigrateAsync(_lab.New, "setup", ["--side", "new", "--tunnel", Tunnel, "--local", $"{newOuter}", "--remote", $"{oldOuter}", "--key", $"{Key}", "--mtu", mtu,
                    "--tuple", tuple, .. encapsulate]));
            Assert.Equal(LinkKind(oldDataplane, v6), await LinkKindAsync(_lab.Old));
            Assert.Equal(LinkKind(newDataplane, v6), await LinkKindAsync(_lab.New));
            using var newMail = new GreeterServer(_lab.New, moved, "new-25");

            using var before = await LineClient.ConnectAsync(_lab.Peer, moved, Token);
            Assert.StartsWith($"old-25 sees {peerPrefix}", await before.ReadLineAsync(Token), StringComparison.Ordinal);

            // What crosses the old host's link, decoded by tshark: outer addresses, the key, and the inner IP and TCP; in UDP
            // also the outer UDP ports (GRE in UDP decoded as GRE by -d, the RFC 8086 port).
            string[] filter = udp ? ["-f", $"udp port {GreInUdpPort}", "-d", $"udp.port=={GreInUdpPort},gre"] : ["-f", v6 ? "ip6 proto 47" : "ip proto 47"];
            string[] udpPorts = udp ? ["-e", "udp.srcport", "-e", "udp.dstport"] : [];
            await using var capture = _lab.Old.StartProcess("tshark", ["-l", "-n", "-i", "eth0", .. filter, "-a", "duration:240",
                "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,",
                "-e", "gre.key", "-e", v6 ? "ipv6.src" : "ip.src", "-e", v6 ? "ipv6.dst" : "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport", .. udpPorts]);
            await capture.WaitForOutputAsync("Capturing on", TimeSpan.FromSeconds(90), Token);

            await MigrateAsync(_lab.Old, "move", tuple);

            // The moved service answers on the old IP:port and sees the peer's real address.
            using (var client = await ConnectOrDescribeAsync(_lab.Peer, moved, userspace))
            {
                Assert.StartsWith($"new-25 sees {peerPrefix}", await client.ReadLineAsync(Token), StringComparison.Ordinal);
                Assert.Equal("new-25: through the tunnel", await client.AskAsync("through the tunnel", Token));
            }

            // What the new host sends from the old IP leaves from the old host.
            using (var outbound = await ConnectOrDescribeAsync(_lab.New, new IPEndPoint(peer, PeerPort), userspace, source: new IPEndPoint(movedAddress, 0)))
            {
                Assert.StartsWith($"peer-7000 sees {(v6 ? $"[{movedAddress}]:" : $"{movedAddress}:")}", await outbound.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            // GRE with the right key from another source (the peer) is dropped by each host: by the kernel host's nft table,
            // by the userspace tunnel's own check. The peer's GRE above was not (the counts are exact). GRE in UDP from the
            // peer's port 4754: the kernel host's table drops it the same way; a userspace host's socket is connected to
            // the remote end, so its kernel finds no socket for it and answers port unreachable.
            foreach (var (host, outerAddress) in new[] { (_lab.Old, oldOuter), (_lab.New, newOuter) })
            {
                var tunnel = userspace.Tunnels.GetValueOrDefault(host);
                if (udp && tunnel is not null)
                {
                    await StrayGreInUdpFindsNoSocketAsync(host, outerAddress, tunnel);
                    continue;
                }

                await SendStrayGreAsync(outerAddress, udp);
                await WaitForStrayDropAsync(host, tunnel);
            }

            // The connection opened before the move still works, on the old host.
            Assert.Equal("old-25: still here", await before.AskAsync("still here", Token));

            await MigrateAsync(_lab.Old, "return", tuple);
            using (var back = await LineClient.ConnectAsync(_lab.Peer, moved, Token))
            {
                Assert.StartsWith($"old-25 sees {peerPrefix}", await back.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            capture.SendSignal(Signals.Interrupt);
            await capture.Exited.WaitAsync(TimeSpan.FromSeconds(60), Token);
            AssertCaptureDecodesBothWays(capture, oldOuter, newOuter, peer, movedAddress, udp);

            await Task.WhenAll(MigrateAsync(_lab.Old, "teardown"), MigrateAsync(_lab.New, "teardown"));
        }

        // Both hosts exactly as before: no link, rule, route, address, sysctl or table left (the kernel host's filter too).
        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
    }

    /// <summary>Connects; when that fails, writes what both hosts hold (ruleset, rules, routes, counters) to the test output first.</summary>
    private async Task<LineClient> ConnectOrDescribeAsync(NetworkNamespace from, IPEndPoint to, UserspaceSides userspace, IPEndPoint? source = null)
    {
        try
        {
            return await LineClient.ConnectAsync(from, to, Token, source);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            output.WriteLine($"connect {to} from {from} failed: {e.Message}");
            foreach (var (host, tunnel) in userspace.Tunnels)
            {
                output.WriteLine($"userspace tunnel on {host}: {tunnel.Counters}");
            }

            foreach (var host in new[] { _lab.Old, _lab.New })
            {
                output.WriteLine($"--- {host}");
                foreach (var command in new[] { new[] { "nft", "list", "ruleset" }, ["ip", "-6", "rule"], ["ip", "-6", "route", "show", "table", "all"], ["ip", "-s", "-d", "link", "show", "dev", Tunnel], ["ip", "addr"], ["conntrack", "-L"] })
                {
                    var result = await host.TryRunAsync(command[0], command[1..], Token);
                    output.WriteLine($"$ {string.Join(' ', command)}\n{result.StandardOutput}{result.StandardError}");
                }
            }

            throw;
        }
    }

    /// <summary>`ip -d link` kind of the tunnel device: gre or ip6gre for the kernel's, tun for ours.</summary>
    private static string LinkKind(string dataplane, bool v6) => dataplane == "userspace" ? "tun" : v6 ? "ip6gre" : "gre";

    private async Task<string> LinkKindAsync(NetworkNamespace host)
    {
        var result = await host.TryRunAsync("ip", ["-d", "-j", "link", "show", "dev", Tunnel], Token);
        Assert.True(result.ExitCode == 0, $"{Tunnel} is missing on {host}: {result.StandardError}");

        using var document = JsonDocument.Parse(result.StandardOutput);
        return document.RootElement[0].GetProperty("linkinfo").GetProperty("info_kind").GetString()!;
    }

    /// <summary>
    /// One GRE packet with the tunnel's key (and an inner IPv4/UDP packet) from the peer to <paramref name="destination"/>;
    /// <paramref name="inUdp"/>: the same GRE packet in a UDP datagram from the peer's port 4754 to the destination's. With
    /// <paramref name="awaitRefusal"/> (GRE in UDP only) the script waits up to 20 s for the destination's ICMP port
    /// unreachable on its connected socket and prints "refused", "answered" or "no answer"; the result's output.
    /// </summary>
    private async Task<string> SendStrayGreAsync(IPAddress destination, bool inUdp = false, bool awaitRefusal = false)
    {
        const string script = """
            import socket, struct, sys
            dst, key, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
            def checksum(b):
                s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
                s = (s >> 16) + (s & 0xffff); s += s >> 16
                return ~s & 0xffff
            udp = struct.pack('!HHHH', 5353, 9, 8 + 5, 0) + b'stray'
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton('198.51.100.10'), socket.inet_aton('192.0.2.1'))
            ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
            gre = struct.pack('!HHI', 0x2000, 0x0800, key) + ip + udp
            family = socket.AF_INET6 if ':' in dst else socket.AF_INET
            if mode == 'gre':
                s = socket.socket(family, socket.SOCK_RAW, 47)
                s.sendto(gre, (dst, 0))
                sys.exit(0)
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind(('::' if family == socket.AF_INET6 else '0.0.0.0', 4754))
            s.connect((dst, 4754))
            s.send(gre)
            if mode == 'udp-refused':
                s.settimeout(20)
                try:
                    s.recv(2048)
                    print('answered')
                except ConnectionRefusedError:
                    print('refused')
                except socket.timeout:
                    print('no answer')
            """;
        var mode = !inUdp ? "gre" : awaitRefusal ? "udp-refused" : "udp";
        // 120 s: python3's start alone took over 30 s in the VM lab under TCG at a load average of 25.
        var sent = await _lab.Peer.TryRunAsync("python3", ["-c", script, destination.ToString(), $"{Key}", mode], Token, TimeSpan.FromSeconds(120));
        Assert.True(sent.ExitCode == 0, $"Sending the stray GRE{(inUdp ? " in UDP" : "")} packet from the peer failed ({sent.ExitCode}): {sent.StandardError}");
        return sent.StandardOutput.Trim();
    }

    /// <summary>
    /// A userspace GRE-in-UDP host and one stray datagram from the peer's port 4754 to its own: the tunnel's socket is
    /// connected to the remote end, so the host's kernel finds no socket for it. Exactly one more UDP datagram to no port
    /// (Udp NoPorts or Udp6NoPorts of the host's namespace), the peer gets port unreachable for its own datagram (so that
    /// one was not taken by the tunnel, whose inner datagram to port 9 would also count as no port), and the tunnel's
    /// drop counters do not move (its socket never saw it).
    /// </summary>
    private async Task StrayGreInUdpFindsNoSocketAsync(NetworkNamespace host, IPAddress destination, UserspaceGreTunnel tunnel)
    {
        var v6 = destination.AddressFamily == AddressFamily.InterNetworkV6;
        var before = await UdpNoPortsAsync(host, v6);
        var counters = tunnel.Counters;
        var answer = await SendStrayGreAsync(destination, inUdp: true, awaitRefusal: true);
        Assert.True(answer == "refused", $"The peer's stray GRE-in-UDP datagram to {destination} port {GreInUdpPort} was not refused by {host} " +
            $"(port unreachable): '{answer}'. Tunnel counters: {tunnel.Counters}");

        // The counter rises as the datagram is refused, before the ICMP leaves: no wait needed, but a few are cheap.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        long after;
        while ((after = await UdpNoPortsAsync(host, v6)) < before + 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100, Token);
        }

        Assert.True(after == before + 1, $"{host} counted {after - before} UDP datagrams to no port ({(v6 ? "Udp6NoPorts" : "Udp NoPorts")} {before} -> {after}); one was sent.");
        var now = tunnel.Counters;
        Assert.True((now.RxStray, now.RxWrongKey, now.RxMalformed) == (counters.RxStray, counters.RxWrongKey, counters.RxMalformed),
            $"The tunnel on {host} saw the stray datagram: {counters} -> {now}");
    }

    /// <summary>Udp NoPorts (/proc/net/snmp) or Udp6NoPorts (/proc/net/snmp6) of the host's namespace.</summary>
    private async Task<long> UdpNoPortsAsync(NetworkNamespace host, bool v6)
    {
        var text = (await host.RunAsync("cat", [v6 ? "/proc/net/snmp6" : "/proc/net/snmp"], Token)).StandardOutput;
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (v6)
        {
            return long.Parse(lines.Single(l => l.StartsWith("Udp6NoPorts ", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
                CultureInfo.InvariantCulture);
        }

        // "Udp: InDatagrams NoPorts ..." and then "Udp: 12 3 ...".
        var udp = lines.Where(l => l.StartsWith("Udp: ", StringComparison.Ordinal)).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        return long.Parse(udp[1][Array.IndexOf(udp[0], "NoPorts")], CultureInfo.InvariantCulture);
    }

    /// <summary>Waits (bounded) until the host has dropped exactly one stray GRE packet more than before.</summary>
    private async Task WaitForStrayDropAsync(NetworkNamespace host, UserspaceGreTunnel? tunnel)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var dropped = tunnel is not null ? tunnel.Counters.RxStray : await KernelStrayCountAsync(host);
            if (dropped == _strays.GetValueOrDefault(host) + 1)
            {
                _strays[host] = dropped;
                return;
            }

            Assert.True(dropped <= _strays.GetValueOrDefault(host) + 1, $"{host} counted {dropped} stray GRE packets; one was sent.");
            Assert.True(DateTime.UtcNow < deadline,
                $"{host} did not drop the stray GRE packet within 20 s ({(tunnel is null ? $"nft counter {dropped}" : $"tunnel counters {tunnel.Counters}")}).\n" +
                (await host.TryRunAsync("nft", ["list", "ruleset"], Token)).StandardOutput);
            await Task.Delay(100, Token);
        }
    }

    /// <summary>The packets of the kernel host's GRE filter counter (table switchover_gre_DEVICE, counter stray).</summary>
    private async Task<long> KernelStrayCountAsync(NetworkNamespace host)
    {
        var result = await host.TryRunAsync("nft", ["-j", "list", "counter", "inet", "switchover_gre_" + Tunnel, "stray"], Token);
        Assert.True(result.ExitCode == 0, $"The kernel GRE host {host} has no stray counter: {result.StandardError}");
        using var document = JsonDocument.Parse(result.StandardOutput);
        return document.RootElement.GetProperty("nftables").EnumerateArray()
            .Where(i => i.TryGetProperty("counter", out _)).Select(i => i.GetProperty("counter").GetProperty("packets").GetInt64()).Single();
    }

    /// <summary>
    /// Every frame is GRE with the key between the two outer addresses, but the one stray from the peer; both directions
    /// carry inner TCP of the moved flow and of the outbound one: peer -> moved:25 and peer:7000 -> moved into the tunnel,
    /// moved:25 -> peer and moved -> peer:7000 out of it. <paramref name="inUdp"/>: every frame is GRE in UDP from port
    /// 4754 to port 4754 (the stray too).
    /// </summary>
    private void AssertCaptureDecodesBothWays(LabProcess capture, IPAddress oldOuter, IPAddress newOuter, IPAddress peer, IPAddress movedAddress, bool inUdp)
    {
        var frames = capture.OutputLines.Where(l => l.Count(c => c == '|') == (inUdp ? 6 : 4)).Select(l => l.Split('|')).ToList();
        var text = string.Join('\n', frames.Select(f => string.Join('|', f)));
        output.WriteLine($"{frames.Count} GRE{(inUdp ? " in UDP" : "")} frames on the old host's link, e.g.:\n" + string.Join('\n', text.Split('\n').Take(12)));
        var (intoTunnel, outOfTunnel, strays) = (0, 0, 0);
        var (port, peerPort) = ($"{Port}", $"{PeerPort}");
        foreach (var f in frames)
        {
            var line = string.Join('|', f);
            var (sources, destinations) = (f[1].Split(','), f[2].Split(','));
            Assert.True(f[0].Length > 0 && ParseNumber(f[0].Split(',')[0]) == Key, $"GRE key {f[0]}, not {Key}: {line}");
            if (inUdp)
            {
                // The outer UDP header's ports (an inner UDP packet's follow them).
                Assert.True(f[5].Split(',')[0] == $"{GreInUdpPort}" && f[6].Split(',')[0] == $"{GreInUdpPort}",
                    $"Outer UDP ports {f[5]} -> {f[6]}, not {GreInUdpPort} -> {GreInUdpPort}: {line}");
            }

            if (sources[0] == $"{peer}")
            {
                strays++;
                continue;
            }

            var way = (sources[0], destinations[0]);
            Assert.True(way == ($"{oldOuter}", $"{newOuter}") || way == ($"{newOuter}", $"{oldOuter}"), $"Outer {way} is not the tunnel's: {line}");
            if (sources.Length < 2 || f[3].Length == 0)
            {
                continue;
            }

            // The inner packet: the second address of the family, and the TCP ports.
            var (source, destination, sport, dport) = (sources[1], destinations[1], f[3], f[4]);
            if (way.Item1 == $"{oldOuter}" && source == $"{peer}" && destination == $"{movedAddress}" && (dport == port || sport == peerPort))
            {
                intoTunnel++;
            }
            else if (way.Item1 == $"{newOuter}" && source == $"{movedAddress}" && destination == $"{peer}" && (sport == port || dport == peerPort))
            {
                outOfTunnel++;
            }
            else if (IsHealthCheck(source, destination) || IsHealthCheck(destination, source))
            {
                // The health check of `move`: the old host connects to the moved tuple through the tunnel, from itself
                // (the moved address, the tunnel's link address, or the old host's own tunnel end where that is another
                // address: whichever source the kernel picks for the device).
                continue;
            }
            else
            {
                Assert.Fail($"An inner packet of neither flow, or the wrong way: {line}");
            }
        }

        bool IsHealthCheck(string from, string to) =>
            to == $"{movedAddress}" && (from == $"{movedAddress}" || from == $"{oldOuter}" || from.StartsWith("169.254.", StringComparison.Ordinal));

        Assert.True(intoTunnel >= 3 && outOfTunnel >= 3, $"tshark decoded {intoTunnel} inner TCP packets old -> new and {outOfTunnel} new -> old:\n{text}");
        Assert.True(strays == 1, $"tshark saw {strays} GRE{(inUdp ? "-in-UDP" : "")} packets from the peer on the old host's link; one was sent:\n{text}");
    }

    /// <summary>The userspace tunnels of a pairing, by host; disposed after the teardown.</summary>
    private sealed class UserspaceSides : IAsyncDisposable
    {
        public Dictionary<NetworkNamespace, UserspaceGreTunnel> Tunnels { get; } = [];

        public async ValueTask DisposeAsync()
        {
            foreach (var tunnel in Tunnels.Values)
            {
                await tunnel.DisposeAsync();
            }
        }
    }
}
