using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.IntegrationTests.Migration;

public sealed partial class MigrationTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private const uint Key = MigrationLab.Key;
    private const string Tunnel = MigrationLab.Tunnel;
    private static readonly string[] OuterDirections = ["192.0.2.1>203.0.113.1", "203.0.113.1>192.0.2.1"];
    // A backstop over each test's own Timeout; the dataplane theory also runs in the VM lab, under TCG.
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(15));
    private readonly string _name = "m" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 4));
    private FourHostLab _lab = null!;

    private CancellationToken Token => _timeout.Token;

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        _lab = await FourHostLab.CreateAsync(Token);
    }

    public Task DisposeAsync() => MigrationLab.DisposeAsync(_lab);

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 240_000)]
    public async Task A_moved_tuple_reaches_the_new_host_with_the_real_client_address_and_teardown_restores_both_hosts_exactly()
    {
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        using var oldWeb = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 80), "old-80");
        using var oldMail = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 25), "old-25");
        using var peerServer = new GreeterServer(_lab.Peer, new IPEndPoint(_lab.PeerV4, 7000), "peer-7000");

        await using (var tunnels = await StartAgentsAsync())
        await using (var mail = new SwitchoverService(_lab.New, Artifacts.Path("GreetingServer", "GreetingServer.dll"), publicPort: 25))
        {
            await mail.DeployAsync("new-25", TimeSpan.FromSeconds(60), Token);
            var generation = mail.Store.ReadUnlocked()!.Active!.Id;
            await MigrateAsync(_lab.Old, "setup", "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}");
            await MigrateAsync(_lab.New, "setup", "--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}",
                "--tuple", "tcp/192.0.2.1:25");

            using var before = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token);
            Assert.StartsWith("old-25 sees 198.51.100.10:", await before.ReadLineAsync(Token), StringComparison.Ordinal);

            // 6. What crosses the link between the hosts is GRE with the configured key, as an independent dissector reads it.
            // -E occurrence=f: the outer header's fields, not the inner packet's.
            await using var capture = _lab.Old.StartProcess("tshark", ["-l", "-n", "-i", "eth0", "-f", "ip proto 47", "-c", "8", "-a", "duration:30",
                "-T", "fields", "-E", "separator=|", "-E", "occurrence=f", "-e", "ip.src", "-e", "ip.dst", "-e", "gre.key", "-e", "gre.proto"]);
            await capture.WaitForOutputAsync("Capturing on", TimeSpan.FromSeconds(20), Token);

            var dryRun = await MigrateAsync(_lab.Old, "move", "tcp/192.0.2.1:25", "--dry-run");
            Assert.Contains("add element", dryRun, StringComparison.Ordinal);
            await MigrateAsync(_lab.Old, "move", "tcp/192.0.2.1:25");

            // 1. The moved service answers on the old IP and sees the peer's real address; port 80 stays.
            LineClient moved;
            try
            {
                moved = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token);
            }
            catch (SocketException)
            {
                output.WriteLine(tunnels.Describe());
                foreach (var host in new[] { _lab.Old, _lab.New })
                {
                    output.WriteLine($"--- {host}\n" + (await host.TryRunAsync("conntrack", ["-L"], Token)).StandardOutput);
                    output.WriteLine((await host.TryRunAsync("nft", ["list", "ruleset"], Token)).StandardOutput);
                    output.WriteLine((await host.TryRunAsync("ip", ["rule"], Token)).StandardOutput);
                    output.WriteLine((await host.TryRunAsync("ip", ["addr"], Token)).StandardOutput);
                }

                throw;
            }

            using (moved)
            {
                Assert.StartsWith("220 new-25 ready, you are 198.51.100.10:", await moved.ReadLineAsync(Token), StringComparison.Ordinal);
                Assert.Equal("250 hello", await moved.AskAsync("ECHO hello", Token));

                // 4. On the new host the moved flow carries both connection marks: the migration's (its replies go
                // back through the tunnel) and the Switchover generation's that serves it (its drain counts the flow),
                // whichever chain set its own first.
                var flows = (await _lab.New.RunAsync("conntrack", ["-L", "-p", "tcp", "--orig-src", "198.51.100.10", "--dport", "25", "--state", "ESTABLISHED"], Token)).StandardOutput;
                var marks = flows.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                    .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Single(f => f.StartsWith("mark=", StringComparison.Ordinal)))
                    .Select(f => uint.Parse(f["mark=".Length..], System.Globalization.CultureInfo.InvariantCulture))
                    .ToList();
                Assert.True(marks.Count == 1, "conntrack on the new host:\n" + flows);
                Assert.Equal(0x2fu, marks[0] & Switchover.Netfilter.SteeringTable.CtMarkMask);
                Assert.Equal(Switchover.Netfilter.HandoffTable.CtMarkOf(generation), marks[0] & Switchover.Netfilter.HandoffTable.CtMarkMask);

                // 3. An outbound connection from the new host, from the old IP, leaves from the old host.
                var outbound = await moved.AskAsync("CONNECT 198.51.100.10 7000 from 192.0.2.1", Token);
                Assert.StartsWith("250 connected from 192.0.2.1:", outbound, StringComparison.Ordinal);
                Assert.Contains("peer-7000 sees 192.0.2.1:", outbound, StringComparison.Ordinal);

                // 7. More than the MTU, many times over, through the moved service.
                Assert.Equal(4_000_000, await moved.AskBulkAsync(4_000_000, Token));
            }

            await capture.Exited.WaitAsync(TimeSpan.FromSeconds(40), Token);
            var frames = capture.OutputLines.Where(l => l.Count(c => c == '|') == 3).ToList();
            output.WriteLine(string.Join('\n', frames));
            Assert.True(frames.Count >= 4, "The capture holds too few GRE frames:\n" + capture.Output);
            Assert.All(frames, f =>
            {
                var fields = f.Split('|');
                Assert.Contains(fields[0] + ">" + fields[1], OuterDirections);
                Assert.Equal(Key, ParseNumber(fields[2]));
            });

            using (var web = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 80), Token))
            {
                Assert.StartsWith("old-80 sees 198.51.100.10:", await web.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            // 2. The connection opened before the move still works, on the old host.
            Assert.Equal("old-25: still here", await before.AskAsync("still here", Token));

            var status = await MigrateAsync(_lab.Old, "status", "--tunnel-socket", Path.Combine(StateDirectory(_lab.Old), "tunnel.sock"));
            output.WriteLine(status);
            Assert.Matches(@"tcp/192\.0\.2\.1:25 +[1-9]\d* +\d+", status);
            Assert.Matches(@"agent +tx [1-9]\d* packets \(0 failed, 0 too big, 0 not IP, 0 refused\), rx [1-9]\d* packets \(0 stray, 0 wrong key, 0 malformed", status);

            // 5. Returning the tuple sends new flows to the old host again.
            await MigrateAsync(_lab.Old, "return", "tcp/192.0.2.1:25");
            using (var back = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
            {
                Assert.StartsWith("old-25 sees 198.51.100.10:", await back.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            output.WriteLine(tunnels.Describe());
            await MigrateAsync(_lab.Old, "teardown");
            await MigrateAsync(_lab.New, "teardown");
        }

        // 8. Both hosts exactly as before: rules, routes, addresses, sysctls, ruleset.
        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.Old), ".migrations")));
        Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.New), ".migrations")));
    }

    [Fact(Timeout = 240_000)]
    public async Task A_udp_tuple_and_an_ipv6_tuple_move_the_same_way()
    {
        var oldV6 = new IPEndPoint(_lab.OldV6, 2525);
        using var oldDns = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 53), "old-53", ProtocolType.Udp);
        using var oldV6Mail = new GreeterServer(_lab.Old, oldV6, "old-v6");
        await using var tunnels = await StartTunnelsAsync();
        await MigrateAsync(_lab.Old, "setup", "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}");
        await MigrateAsync(_lab.New, "setup", "--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}",
            "--tuple", "udp/192.0.2.1:53", "--tuple", "tcp/[2001:db8:2::1]:2525");

        // The services on the new host bind the moved addresses (UDP must, to answer from them).
        using var newDns = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 53), "new-53", ProtocolType.Udp);
        using var newV6Mail = new GreeterServer(_lab.New, oldV6, "new-v6");

        Assert.StartsWith("old-53 sees 198.51.100.10:", await UdpAskAsync(), StringComparison.Ordinal);
        await MigrateAsync(_lab.Old, "move", "udp/192.0.2.1:53", "--check", "none");
        await MigrateAsync(_lab.Old, "move", "tcp/[2001:db8:2::1]:2525");

        Assert.StartsWith("new-53 sees 198.51.100.10:", await UdpAskAsync(), StringComparison.Ordinal);
        using (var v6 = await LineClient.ConnectAsync(_lab.Peer, oldV6, Token))
        {
            Assert.StartsWith("new-v6 sees [2001:db8:100::10]:", await v6.ReadLineAsync(Token), StringComparison.Ordinal);
            Assert.Equal("new-v6: over IPv6 inside IPv4 GRE", await v6.AskAsync("over IPv6 inside IPv4 GRE", Token));
        }

        await MigrateAsync(_lab.Old, "return", "udp/192.0.2.1:53");
        await MigrateAsync(_lab.Old, "return", "tcp/[2001:db8:2::1]:2525");
        Assert.StartsWith("old-53 sees 198.51.100.10:", await UdpAskAsync(), StringComparison.Ordinal);
        using (var v6 = await LineClient.ConnectAsync(_lab.Peer, oldV6, Token))
        {
            Assert.StartsWith("old-v6 sees [2001:db8:100::10]:", await v6.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        await MigrateAsync(_lab.Old, "teardown");
        await MigrateAsync(_lab.New, "teardown");

        // A fresh source port each time: a UDP flow that conntrack already knows keeps its old path.
        async Task<string> UdpAskAsync()
        {
            using var socket = _lab.Peer.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(new IPEndPoint(_lab.PeerV4, 0));
            await socket.SendToAsync(Encoding.ASCII.GetBytes("query"), SocketFlags.None, new IPEndPoint(_lab.OldV4, 53), Token);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            var buffer = new byte[512];
            var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
            Assert.Equal(new IPEndPoint(_lab.OldV4, 53), received.RemoteEndPoint);
            return Encoding.ASCII.GetString(buffer, 0, received.ReceivedBytes);
        }
    }

    [Fact(Timeout = 240_000)]
    public async Task When_the_provider_routes_the_ip_to_the_new_host_status_says_so_and_finalize_serves_it_directly()
    {
        await using var tunnels = await StartTunnelsAsync();
        await MigrateAsync(_lab.Old, "setup", "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25");
        await MigrateAsync(_lab.New, "setup", "--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25");
        using var mail = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 25), "new-25");
        using (var viaTunnel = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("new-25 sees 198.51.100.10:", await viaTunnel.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        var refused = await CliAsync(_lab.New, ["migrate", "finalize", "--name", _name]);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("still routes them to the old host", refused.StandardError, StringComparison.Ordinal);
        Assert.DoesNotContain("arrived here directly", await MigrateAsync(_lab.New, "status"), StringComparison.Ordinal);

        // finalize --watch waits while everything still comes through the tunnel.
        await using var watch = await MigrationLab.StartFinalizeWatchAsync(_lab, _name, "new-25", Token);

        // The provider moves the IP: the router now sends 192.0.2.1 to the new host.
        // The old host's only address was also the tunnel's end, so the tunnel is cut: the SYN arrives, the reply is lost
        // until finalize makes the new host answer directly.
        await _lab.Router.RunAsync("ip", ["route", "add", "192.0.2.1/32", "via", "203.0.113.1"], Token);
        using (var attempt = _lab.Peer.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(Token))
        {
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            await Record.ExceptionAsync(() => attempt.ConnectAsync(new IPEndPoint(_lab.OldV4, 25), timeout.Token).AsTask());
        }

        // The watch sees direct arrivals and a quiet tunnel, and finalizes by itself.
        Assert.True(await watch.Exited.WaitAsync(TimeSpan.FromSeconds(60), Token) == 0, "finalize --watch did not finalize:\n" + watch.Output);
        output.WriteLine(watch.Output);
        Assert.Matches(@"[1-9]\d* packets arrived directly and none through the tunnel for", watch.Output);
        Assert.Contains("inet 192.0.2.1/32 scope global lo", (await _lab.New.RunAsync("ip", ["addr", "show", "dev", "lo"], Token)).StandardOutput, StringComparison.Ordinal);
        Assert.DoesNotContain("lookup 47", (await _lab.New.RunAsync("ip", ["rule"], Token)).StandardOutput, StringComparison.Ordinal);
        using (var after = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("new-25 sees 198.51.100.10:", await after.ReadLineAsync(Token), StringComparison.Ordinal);
            Assert.Equal("new-25: served directly", await after.AskAsync("served directly", Token));
        }

        await MigrateAsync(_lab.Old, "teardown");
    }

    [Fact(Timeout = 240_000)]
    public async Task Bad_input_is_refused_with_a_clear_error_and_changes_nothing()
    {
        await using var tunnels = await StartTunnelsAsync();
        var before = await SnapshotAsync(_lab.Old);
        string[] common = ["--tunnel", Tunnel, "--side", "old"];

        await RefusedAsync([.. common, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", "1", "--tuple", "tcp/192.0.2.99:25"], "192.0.2.99 is not an address of this host");
        await RefusedAsync([.. common, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", "1", "--tuple", "tcp/192.0.2.1:25", "--tuple", "tcp/192.0.2.1:25"], "Overlapping tuples");
        await RefusedAsync([.. common, "--local", "192.0.2.1", "--remote", "192.0.2.1", "--key", "1"], "to itself");
        await RefusedAsync([.. common, "--local", "192.0.2.1", "--remote", "203.0.113.1"], "The GRE key is missing");

        Assert.Equal(before, await SnapshotAsync(_lab.Old));
        Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.Old), ".migrations")));

        async Task RefusedAsync(string[] arguments, string message)
        {
            var result = await CliAsync(_lab.Old, ["migrate", "setup", "--name", _name, .. arguments]);
            output.WriteLine($"{string.Join(' ', arguments)} -> {result.ExitCode}: {result.StandardError}");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains(message, result.StandardError, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// Our machines' kernel has neither ip_gre nor fou: GRE in UDP on the kernel dataplane is refused before anything
    /// changes, saying what to do; the default dataplane choice (auto) takes the userspace tunnel, which needs no fou.
    /// </summary>
    [Fact(Timeout = 240_000)]
    public async Task Gre_in_udp_on_the_kernel_dataplane_without_fou_is_refused_changing_nothing_and_auto_takes_userspace_without_fou()
    {
        if ((await _lab.Old.TryRunAsync("ip", ["fou", "show"], Token)).ExitCode == 0)
        {
            output.WriteLine("This kernel has FOU: nothing to refuse here (the VM lab's stock kernel runs GRE in UDP on the kernel dataplane).");
            return;
        }

        var before = await SnapshotAsync(_lab.Old);
        string[] old = ["--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25", "--encapsulation", "udp"];

        var refused = await CliAsync(_lab.Old, ["migrate", "setup", "--name", _name, .. old, "--kernel-gre"]);
        output.WriteLine($"--kernel-gre -> {refused.ExitCode}: {refused.StandardError}");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("This kernel has no FOU (foo-over-UDP; 'ip fou show':", refused.StandardError, StringComparison.Ordinal);
        Assert.Contains("Load it (modprobe fou) and run the setup again, or start the userspace tunnel first (switchover tunnel run --dataplane userspace " +
            $"--name {Tunnel} --local 192.0.2.1 --remote 203.0.113.1", refused.StandardError, StringComparison.Ordinal);
        Assert.Contains("Nothing was changed.", refused.StandardError, StringComparison.Ordinal);
        Assert.DoesNotContain("undone", refused.StandardError, StringComparison.Ordinal);
        Assert.Equal(before, await SnapshotAsync(_lab.Old));
        Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.Old), ".migrations")), "The refused setup left migration state.");

        // auto (no --kernel-gre) on a kernel without GRE: the userspace tunnel, which the operator starts with
        // `tunnel run --dataplane auto`; it speaks GRE in UDP itself, without fou.
        var noDevice = await CliAsync(_lab.Old, ["migrate", "setup", "--name", _name, .. old]);
        Assert.Equal(1, noDevice.ExitCode);
        Assert.Contains($"There is no tunnel device '{Tunnel}'. This kernel has no GRE module: start the userspace tunnel first", noDevice.StandardError, StringComparison.Ordinal);
        Assert.Contains("--encapsulation udp", noDevice.StandardError, StringComparison.Ordinal);

        await using (var agents = await MigrationLab.StartAgentsAsync(_lab, Token, dataplane: "auto", encapsulation: TunnelEncapsulation.GreInUdp))
        {
            Assert.Contains("; using the userspace dataplane", agents.Describe(), StringComparison.Ordinal);
            var setup = await MigrateAsync(_lab.Old, "setup", old);
            output.WriteLine(setup);
            Assert.DoesNotContain("fou", setup, StringComparison.Ordinal);
            await MigrateAsync(_lab.Old, "teardown");
        }

        Assert.Equal(before, await SnapshotAsync(_lab.Old));
    }

    [Fact(Timeout = 240_000)]
    public async Task A_second_migration_on_a_host_gets_its_own_mark_table_and_link_network_and_one_that_shares_them_is_refused()
    {
        await using var tunnels = await StartTunnelsAsync();
        await using var second = await UserspaceGreTunnel.StartAsync(new TunnelOptions
        {
            Name = "gre-sw2", Local = _lab.OldV4, Remote = _lab.NewV4, Key = 4343, Mtu = 1472, NetworkNamespace = _lab.Old.Name,
        }, Token);
        var before = await SnapshotAsync(_lab.Old);
        var other = _name + "b";
        string[] old = ["--side", "old", "--local", "192.0.2.1", "--remote", "203.0.113.1"];

        await MigrateAsync(_lab.Old, "setup", [.. old, "--tunnel", Tunnel, "--key", $"{Key}", "--tuple", "tcp/192.0.2.1:25"]);
        await RefusedAsync([.. old, "--tunnel", Tunnel, "--key", "4343"], $"Tunnel device {Tunnel} already belongs to migration '{_name}'");
        await RefusedAsync([.. old, "--tunnel", "gre-sw2", "--key", $"{Key}"], $"is already used by migration '{_name}' (the same GRE key?)");
        await RefusedAsync([.. old, "--tunnel", "gre-sw2", "--key", "4343", "--mark", "0x2f"], $"fwmark 0x2f is already used by migration '{_name}'");
        await RefusedAsync([.. old, "--tunnel", "gre-sw2", "--key", "4343", "--table", "47"], $"Routing table 47 is already used by migration '{_name}'");
        await RefusedAsync([.. old, "--tunnel", "gre-sw2", "--key", "4343", "--tuple", "tcp/192.0.2.1:25"], "tcp/192.0.2.1:25 is already moved by another migration");

        var setup = await MigrateAsync(_lab.Old, "setup", ["--name", other, .. old, "--tunnel", "gre-sw2", "--key", "4343", "--tuple", "tcp/192.0.2.1:80"]);
        output.WriteLine(setup);
        var rules = (await _lab.Old.RunAsync("ip", ["-4", "rule"], Token)).StandardOutput;
        Assert.Contains("fwmark 0x2f lookup 47", rules, StringComparison.Ordinal);
        Assert.Contains("fwmark 0x30 lookup 48", rules, StringComparison.Ordinal);
        var link = $"{MigrationSpecAddress(4343)}/30";
        Assert.Contains(link, (await _lab.Old.RunAsync("ip", ["addr", "show", "dev", "gre-sw2"], Token)).StandardOutput, StringComparison.Ordinal);

        await MigrateAsync(_lab.Old, "teardown", "--name", other);
        await MigrateAsync(_lab.Old, "teardown");
        Assert.Equal(before, await SnapshotAsync(_lab.Old));

        async Task RefusedAsync(string[] arguments, string message)
        {
            var result = await CliAsync(_lab.Old, ["migrate", "setup", "--name", other, .. arguments]);
            output.WriteLine($"{string.Join(' ', arguments)} -> {result.ExitCode}: {result.StandardError}");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains(message, result.StandardError, StringComparison.Ordinal);
        }

        // The old side's link address in the /30 the key gives.
        static string MigrationSpecAddress(uint key)
        {
            var bytes = Switchover.Migration.Model.MigrationSpec.LinkNetworkForKey(key).GetAddressBytes();
            bytes[3] += 1;
            return new IPAddress(bytes).ToString();
        }
    }

    [Fact(Timeout = 240_000)]
    public async Task Move_refuses_while_the_new_hosts_service_is_down_and_with_wait_moves_once_it_answers_through_the_tunnel()
    {
        await using var tunnels = await StartTunnelsAsync();
        using var oldMail = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 25), "old-25");
        await MigrateAsync(_lab.Old, "setup", "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}");
        await MigrateAsync(_lab.New, "setup", "--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25", "--tuple", "tcp/192.0.2.1:80", "--tuple", "udp/192.0.2.1:53");

        // Nothing listens on the new host: refused, with the reason, and the tuple stays.
        var refused = await CliAsync(_lab.Old, ["migrate", "move", "--name", _name, "tcp/192.0.2.1:25"]);
        output.WriteLine(refused.StandardError);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("Not moving tcp/192.0.2.1:25: the new host does not serve it through the tunnel", refused.StandardError, StringComparison.Ordinal);
        Assert.Contains("--wait", refused.StandardError, StringComparison.Ordinal);
        using (var still = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("old-25 sees", await still.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        // --wait: the move goes ahead once the service on the new host is up.
        await using var waiting = _lab.Old.StartProcess("dotnet",
            [Artifacts.Cli, "migrate", "move", "--name", _name, "tcp/192.0.2.1:25", "--wait", "90s", "--state-dir", StateDirectory(_lab.Old)]);
        await Task.Delay(TimeSpan.FromSeconds(2), Token);
        Assert.False(waiting.HasExited, "move --wait returned before the new host served the tuple:\n" + waiting.Output);
        using var newMail = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 25), "new-25");
        Assert.True(await waiting.Exited.WaitAsync(TimeSpan.FromSeconds(60), Token) == 0, "move --wait failed:\n" + waiting.Output);
        using (var moved = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("new-25 sees 198.51.100.10:", await moved.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        // An HTTP check: a path the new host's server does not have is refused with its status; one it has moves.
        await using var web = _lab.New.StartProcess("python3", ["-u", "-m", "http.server", "80", "--bind", "192.0.2.1", "--directory", "/usr/share/doc"]);
        await web.WaitForOutputAsync("Serving HTTP", TimeSpan.FromSeconds(30), Token);
        var missing = await CliAsync(_lab.Old, ["migrate", "move", "--name", _name, "tcp/192.0.2.1:80", "--check", "http:/no-such-page"]);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("GET /no-such-page on tcp/192.0.2.1:80 through the tunnel answered HTTP/1.0 404", missing.StandardError, StringComparison.Ordinal);
        await MigrateAsync(_lab.Old, "move", "tcp/192.0.2.1:80", "--check", "http:/");

        // UDP cannot be checked: the operator says so.
        var udp = await CliAsync(_lab.Old, ["migrate", "move", "--name", _name, "udp/192.0.2.1:53"]);
        Assert.Equal(1, udp.ExitCode);
        Assert.Contains("pass --check none", udp.StandardError, StringComparison.Ordinal);
        await MigrateAsync(_lab.Old, "move", "udp/192.0.2.1:53", "--check", "none");

        var bad = await CliAsync(_lab.Old, ["migrate", "move", "--name", _name, "tcp/192.0.2.1:25", "--check", "ping"]);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("use tcp, http:/PATH", bad.StandardError, StringComparison.Ordinal);

        await MigrateAsync(_lab.Old, "teardown");
        await MigrateAsync(_lab.New, "teardown");
    }

    private async Task<string> MigrateAsync(NetworkNamespace host, string verb, params string[] arguments)
    {
        string[] name = arguments.Contains("--name") ? [] : ["--name", _name];
        var result = await CliAsync(host, ["migrate", verb, .. name, .. arguments]);
        Assert.True(result.ExitCode == 0, $"switchover migrate {verb} {string.Join(' ', arguments)} on {host} failed ({result.ExitCode}): {result.StandardError}");
        return result.StandardOutput;
    }

    private static string StateDirectory(NetworkNamespace host) => MigrationLab.StateDirectory(host);

    private Task<CommandOutput> CliAsync(NetworkNamespace host, string[] arguments) => MigrationLab.CliAsync(host, arguments, Token);

    private Task<MigrationLab.Tunnels> StartTunnelsAsync() => MigrationLab.StartTunnelsAsync(_lab, Token);

    private Task<string> SnapshotAsync(NetworkNamespace host) => HostSnapshot.TakeAsync(host, Token);

    private static uint ParseNumber(string text) =>
        text.StartsWith("0x", StringComparison.Ordinal)
            ? uint.Parse(text.AsSpan(2), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture)
            : uint.Parse(text, System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The userspace tunnel as it runs in production: a long-lived 'switchover tunnel run' agent on each host.</summary>
    private Task<MigrationLab.Agents> StartAgentsAsync() => MigrationLab.StartAgentsAsync(_lab, Token);
}
