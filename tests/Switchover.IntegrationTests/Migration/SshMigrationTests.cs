using System.Net;
using System.Text;
using System.Text.Json;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.IntegrationTests.Migration;

/// <summary>
/// The whole migration driven from the new host: the old host's side through a real sshd (Debian's openssh-server)
/// in the old host's namespace, with host and client keys made for the test, reached by the OpenSSH client.
/// </summary>
public sealed class SshMigrationTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private const uint Key = MigrationLab.Key;
    private const string Tunnel = MigrationLab.Tunnel;
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(10));
    private readonly string _name = "s" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 4));
    private FourHostLab _lab = null!;
    private Sshd _sshd = null!;

    private CancellationToken Token => _timeout.Token;

    private string PeerUri => $"ssh://root@{_lab.OldV4}";

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        _lab = await FourHostLab.CreateAsync(Token);
        _sshd = await Sshd.StartAsync(_lab.Old, _lab.OldV4, _name, Token);
    }

    public async Task DisposeAsync()
    {
        try
        {
            await _sshd.DisposeAsync();
        }
        finally
        {
            await MigrationLab.DisposeAsync(_lab);
        }
    }

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 300_000)]
    public async Task From_the_new_host_alone_a_tuple_moves_with_the_real_client_address_and_teardown_restores_both_hosts_exactly()
    {
        using var oldMail = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 25), "old-25");
        using var peerServer = new GreeterServer(_lab.Peer, new IPEndPoint(_lab.PeerV4, 7000), "peer-7000");
        await using var tunnels = await StartTunnelsAsync();
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);

        await using (var mail = new SwitchoverService(_lab.New, Artifacts.Path("GreetingServer", "GreetingServer.dll"), publicPort: 25))
        {
            await mail.DeployAsync("new-25", TimeSpan.FromSeconds(60), Token);
            var setup = await NewAsync("setup", [.. NewSide, "--tuple", "tcp/192.0.2.1:25", .. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts)]);
            output.WriteLine(setup);
            Assert.Contains($"peer {PeerUri}:", setup, StringComparison.Ordinal);

            // Journaled on both hosts; this host's journal names the peer and what it answered.
            Assert.True(File.Exists(Journal(_lab.Old)), "The old host has no journal of its side.");
            using (var journal = JsonDocument.Parse(await File.ReadAllTextAsync(Journal(_lab.New), Token)))
            {
                var peer = journal.RootElement.GetProperty("peer");
                Assert.Equal(PeerUri, peer.GetProperty("uri").GetString());
                var answers = peer.GetProperty("answers").EnumerateArray().Select(a => a.GetProperty("request").GetString()).ToList();
                Assert.Equal(["check: switchover --version", "setup"], answers);
            }

            using var before = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token);
            Assert.StartsWith("old-25 sees 198.51.100.10:", await before.ReadLineAsync(Token), StringComparison.Ordinal);

            // move runs on the old host over SSH; its health check runs there, through the tunnel, as without --peer.
            var move = await NewAsync("move", ["tcp/192.0.2.1:25"]);
            output.WriteLine(move);
            Assert.Contains("did: move tcp/192.0.2.1:25", move, StringComparison.Ordinal);

            using (var moved = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
            {
                Assert.StartsWith("220 new-25 ready, you are 198.51.100.10:", await moved.ReadLineAsync(Token), StringComparison.Ordinal);
                var outbound = await moved.AskAsync("CONNECT 198.51.100.10 7000 from 192.0.2.1", Token);
                Assert.StartsWith("250 connected from 192.0.2.1:", outbound, StringComparison.Ordinal);
                Assert.Contains("peer-7000 sees 192.0.2.1:", outbound, StringComparison.Ordinal);
            }

            Assert.Equal("old-25: still here", await before.AskAsync("still here", Token));

            // Status shows both sides: this (new) host's, then the old host's as it reports it.
            var status = await NewAsync("status", []);
            output.WriteLine(status);
            Assert.Contains($"migration {_name} (new side)", status, StringComparison.Ordinal);
            Assert.Contains($"peer {PeerUri}:", status, StringComparison.Ordinal);
            Assert.Contains($"migration {_name} (old side)", status, StringComparison.Ordinal);
            Assert.Matches(@"tcp/192\.0\.2\.1:25 +[1-9]\d* +\d+", status);
            var json = await NewAsync("status", ["--json"]);
            using (var document = JsonDocument.Parse(json))
            {
                Assert.Equal("New", document.RootElement.GetProperty("local").GetProperty("side").GetString());
                Assert.Equal("Old", document.RootElement.GetProperty("peer").GetProperty("status").GetProperty("side").GetString());
            }

            await NewAsync("return", ["tcp/192.0.2.1:25"]);
            using (var back = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
            {
                Assert.StartsWith("old-25 sees 198.51.100.10:", await back.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            var teardown = await NewAsync("teardown", []);
            output.WriteLine(teardown);
            Assert.Contains($"peer {PeerUri}:", teardown, StringComparison.Ordinal);
        }

        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
    }

    [Fact(Timeout = 300_000)]
    public async Task From_the_old_host_alone_setup_gives_the_new_host_the_tuples_and_teardown_restores_both_hosts_exactly()
    {
        await using var tunnels = await StartTunnelsAsync();
        await using var newSshd = await Sshd.StartAsync(_lab.New, _lab.NewV4, _name + "n", Token);
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        var peer = $"ssh://root@{_lab.NewV4}";
        var options = NewHostPeerOptions(peer, newSshd);

        var setup = await OldAsync("setup", ["--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25", .. options]);
        output.WriteLine(setup);

        // The tuple went to the new host (its address on lo); the old host moves it only with 'move'.
        Assert.Contains("inet 192.0.2.1/32 scope global lo", (await _lab.New.RunAsync("ip", ["addr", "show", "dev", "lo"], Token)).StandardOutput,
            StringComparison.Ordinal);
        Assert.DoesNotContain("move tcp/192.0.2.1:25", setup, StringComparison.Ordinal);
        var status = await OldAsync("status", []);
        Assert.Contains($"migration {_name} (old side)", status, StringComparison.Ordinal);
        Assert.Contains($"peer {peer}:", status, StringComparison.Ordinal);
        Assert.Contains($"migration {_name} (new side)", status, StringComparison.Ordinal);

        await OldAsync("teardown", []);
        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
    }

    /// <summary>
    /// GRE in UDP (userspace tunnels) driven from the old host: the new host's setup over SSH gets --encapsulation udp.
    /// It shows in its journal and status, and in what it does: the new host holds 192.0.2.1 on lo, and only its rule
    /// for UDP 4754 to 192.0.2.1 keeps the userspace tunnel's own datagrams leaving by the uplink (the protocol-47 rule,
    /// which GRE in UDP gets too for a kernel FOU link, does not match them), so the move's health check and the moved
    /// flow get through only when the peer really set up udp.
    /// </summary>
    [Fact(Timeout = 300_000)]
    public async Task From_the_old_host_with_gre_in_udp_the_new_host_is_set_up_for_udp_over_ssh_and_the_moved_flow_crosses_as_udp_4754()
    {
        await using var tunnels = await MigrationLab.StartTunnelsAsync(_lab, Token, encapsulation: TunnelEncapsulation.GreInUdp);
        await using var newSshd = await Sshd.StartAsync(_lab.New, _lab.NewV4, _name + "n", Token);
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        var peer = $"ssh://root@{_lab.NewV4}";
        string[] options = [.. NewHostPeerOptions(peer, newSshd), "--peer-timeout", "120s"];

        var setup = await OldAsync("setup", ["--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}",
            "--tuple", "tcp/192.0.2.1:25", "--encapsulation", "udp", .. options]);
        output.WriteLine(setup);

        using (var journal = JsonDocument.Parse(await File.ReadAllTextAsync(Journal(_lab.New), Token)))
        {
            Assert.Equal("udp", journal.RootElement.GetProperty("encapsulation").GetString());
        }

        using (var status = JsonDocument.Parse(await OldAsync("status", ["--json"])))
        {
            Assert.Equal("udp", status.RootElement.GetProperty("local").GetProperty("encapsulation").GetString());
            Assert.Equal("udp", status.RootElement.GetProperty("peer").GetProperty("status").GetProperty("encapsulation").GetString());
        }

        var newRules = (await _lab.New.RunAsync("ip", ["-4", "rule"], Token)).StandardOutput;
        // Only GRE in UDP has the udp 4754 rule; it has the gre one as well, for a kernel FOU link, which routes as GRE.
        Assert.Contains("to 192.0.2.1 ipproto udp dport 4754 lookup main", newRules, StringComparison.Ordinal);
        Assert.Contains("to 192.0.2.1 ipproto gre lookup main", newRules, StringComparison.Ordinal);

        await using (var capture = _lab.Old.StartProcess("tcpdump", ["-l", "-n", "-i", FourHostLab.Link, "udp port 4754 or ip proto 47"]))
        {
            await capture.WaitForOutputAsync("listening on", TimeSpan.FromSeconds(30), Token);
            using var mail = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 25), "new-25");
            var move = await OldAsync("move", ["tcp/192.0.2.1:25"]);
            Assert.Contains("did: move tcp/192.0.2.1:25", move, StringComparison.Ordinal);
            using (var moved = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
            {
                Assert.StartsWith("new-25 sees 198.51.100.10:", await moved.ReadLineAsync(Token), StringComparison.Ordinal);
                Assert.Equal("new-25: through udp", await moved.AskAsync("through udp", Token));
            }

            capture.SendSignal(Signals.Interrupt);
            await capture.Exited.WaitAsync(TimeSpan.FromSeconds(30), Token);
            output.WriteLine(capture.Output);
            Assert.Contains(capture.OutputLines, l => l.Contains("192.0.2.1.4754 > 203.0.113.1.4754: UDP", StringComparison.Ordinal));
            Assert.Contains(capture.OutputLines, l => l.Contains("203.0.113.1.4754 > 192.0.2.1.4754: UDP", StringComparison.Ordinal));
            Assert.DoesNotContain(capture.OutputLines, l => l.Contains("GRE", StringComparison.Ordinal));
        }

        await OldAsync("teardown", []);
        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
    }

    [Fact(Timeout = 300_000)]
    public async Task Finalize_from_the_new_host_finalizes_it_and_tears_down_the_old_host_exactly_over_ssh()
    {
        await using var tunnels = await StartTunnelsAsync();
        var oldBefore = await SnapshotAsync(_lab.Old);
        await NewAsync("setup", [.. NewSide, "--tuple", "tcp/192.0.2.1:25", .. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts)]);
        Assert.True(File.Exists(Journal(_lab.Old)), "The old host has no journal of its side.");

        var finalize = await NewAsync("finalize", ["--force"]);
        output.WriteLine(finalize);
        Assert.Contains($"peer {PeerUri}:", finalize, StringComparison.Ordinal);

        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
        Assert.Contains("inet 192.0.2.1/32 scope global lo", (await _lab.New.RunAsync("ip", ["addr", "show", "dev", "lo"], Token)).StandardOutput,
            StringComparison.Ordinal);
    }

    [Fact(Timeout = 300_000)]
    public async Task A_peer_named_by_a_host_name_that_resolves_to_the_moved_address_stays_reachable_over_ssh_after_setup()
    {
        // The new host resolves the old host's name through its own /etc/hosts (ip netns exec mounts /etc/netns/NS/hosts).
        var etc = Path.Combine("/etc/netns", _lab.New.Name);
        Directory.CreateDirectory(etc);
        try
        {
            await File.WriteAllTextAsync(Path.Combine(etc, "hosts"), $"127.0.0.1 localhost\n{_lab.OldV4} {_sshd.HostName}\n", Token);
            await using var tunnels = await StartTunnelsAsync();
            var oldBefore = await SnapshotAsync(_lab.Old);
            var newBefore = await SnapshotAsync(_lab.New);
            var peer = $"ssh://root@{_sshd.HostName}";
            string[] options = [.. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts).Select(o => o == PeerUri ? peer : o)];

            var setup = await NewAsync("setup", [.. NewSide, "--tuple", "tcp/192.0.2.1:25", .. options]);
            output.WriteLine(setup);

            // 192.0.2.1 is on lo here now; the name's address gets the rule that keeps SSH to it leaving by the uplink.
            Assert.Contains("to 192.0.2.1 ipproto tcp dport 22 lookup main", (await _lab.New.RunAsync("ip", ["rule"], Token)).StandardOutput, StringComparison.Ordinal);
            using var mail = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 25), "new-25");
            var move = await NewAsync("move", ["tcp/192.0.2.1:25"]);
            Assert.Contains("did: move tcp/192.0.2.1:25", move, StringComparison.Ordinal);
            Assert.Contains($"migration {_name} (old side)", await NewAsync("status", []), StringComparison.Ordinal);
            using (var moved = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
            {
                Assert.StartsWith("new-25 sees 198.51.100.10:", await moved.ReadLineAsync(Token), StringComparison.Ordinal);
            }

            var teardown = await NewAsync("teardown", []);
            Assert.Contains($"peer {peer}:", teardown, StringComparison.Ordinal);
            Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
            Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
            AssertNoJournal(_lab.Old);
            AssertNoJournal(_lab.New);
        }
        finally
        {
            Directory.Delete(etc, recursive: true);
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task Finalize_watch_from_the_new_host_finalizes_once_the_router_sends_the_ip_here_and_tears_down_the_old_host_over_ssh()
    {
        // The usual rented box: the moved IP and a second address of the old host's own, for SSH and the tunnel, which
        // the provider's re-route leaves where it is.
        var management = IPAddress.Parse("192.0.2.2");
        await _lab.Old.RunAsync("ip", ["addr", "add", "192.0.2.2/24", "dev", FourHostLab.Link], Token);
        await using var sshd = await Sshd.StartAsync(_lab.Old, management, _name + "m", Token);
        await using var tunnels = await MigrationLab.StartTunnelsAsync(_lab, Token, management);
        var oldBefore = await SnapshotAsync(_lab.Old);
        var peer = $"ssh://root@{management}";
        string[] options = [.. PeerOptions(sshd.ClientKey, sshd.KnownHosts).Select(o => o == PeerUri ? peer : o)];
        string[] side = [.. NewSide.Select(o => o == "192.0.2.1" ? "192.0.2.2" : o)];
        await NewAsync("setup", [.. side, "--tuple", "tcp/192.0.2.1:25", .. options]);
        using var mail = new GreeterServer(_lab.New, new IPEndPoint(_lab.OldV4, 25), "new-25");
        await NewAsync("move", ["tcp/192.0.2.1:25"]);

        await using var watch = await MigrationLab.StartFinalizeWatchAsync(_lab, _name, "new-25", Token);

        // The provider moves the IP (only it): the router now sends 192.0.2.1 to the new host; 192.0.2.2 stays.
        await _lab.Router.RunAsync("ip", ["route", "add", "192.0.2.1/32", "via", "203.0.113.1"], Token);
        using (var direct = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("new-25 sees 198.51.100.10:", await direct.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        Assert.True(await watch.Exited.WaitAsync(TimeSpan.FromSeconds(90), Token) == 0, "finalize --watch did not finalize:\n" + watch.Output +
            $"\nsshd:\n{string.Join('\n', sshd.Log)}");
        output.WriteLine(watch.Output);
        Assert.Matches(@"[1-9]\d* packets arrived directly and none through the tunnel for", watch.Output);
        Assert.Contains($"peer {peer}:", watch.Output, StringComparison.Ordinal);

        // The old host is as it was, its side torn down over SSH; this host serves the IP directly.
        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
        Assert.DoesNotContain("lookup 47", (await _lab.New.RunAsync("ip", ["rule"], Token)).StandardOutput, StringComparison.Ordinal);
        using var after = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token);
        Assert.StartsWith("new-25 sees 198.51.100.10:", await after.ReadLineAsync(Token), StringComparison.Ordinal);
        Assert.Equal("new-25: served directly", await after.AskAsync("served directly", Token));
    }

    [Fact(Timeout = 300_000)]
    public async Task A_wrong_key_and_an_unknown_host_key_are_each_refused_with_a_clear_error_and_change_nothing_on_either_host()
    {
        await using var tunnels = await StartTunnelsAsync();
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);

        var wrongKey = await RefusedAsync(_sshd.WrongKey, _sshd.KnownHosts);
        Assert.Contains($"{PeerUri} refused the key {_sshd.WrongKey}", wrongKey, StringComparison.Ordinal);
        Assert.Contains("Permission denied (publickey)", wrongKey, StringComparison.Ordinal);
        Assert.Contains("authorized_keys", wrongKey, StringComparison.Ordinal);

        var unknownHost = await RefusedAsync(_sshd.ClientKey, _sshd.EmptyKnownHosts);
        Assert.Contains($"ssh refused {PeerUri}: its host key is not in {_sshd.EmptyKnownHosts}", unknownHost, StringComparison.Ordinal);
        Assert.Contains("Host key verification failed", unknownHost, StringComparison.Ordinal);
        Assert.Contains($"ssh-keyscan {_lab.OldV4} >> {_sshd.EmptyKnownHosts}", unknownHost, StringComparison.Ordinal);

        // A host key that is known but different is refused too.
        var otherHost = await RefusedAsync(_sshd.ClientKey, _sshd.WrongKnownHosts);
        Assert.Contains("its host key differs from the one in", otherHost, StringComparison.Ordinal);

        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
        Assert.DoesNotContain(_sshd.Log, l => l.StartsWith("Accepted publickey", StringComparison.Ordinal));

        async Task<string> RefusedAsync(string key, string knownHosts)
        {
            var result = await CliAsync(_lab.New, ["migrate", "setup", "--name", _name, .. NewSide, "--tuple", "tcp/192.0.2.1:25", .. PeerOptions(key, knownHosts)]);
            output.WriteLine($"{key}, {knownHosts} -> {result.ExitCode}: {result.StandardError}");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains("Nothing was changed on either host", result.StandardError, StringComparison.Ordinal);
            // Refused before this host changed anything, not set up and undone.
            Assert.DoesNotContain("undone", result.StandardError, StringComparison.Ordinal);
            return result.StandardError;
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task A_move_the_old_host_refuses_fails_here_with_its_reason_which_the_journal_here_records()
    {
        await using var tunnels = await StartTunnelsAsync();
        using var oldMail = new GreeterServer(_lab.Old, new IPEndPoint(_lab.OldV4, 25), "old-25");
        await NewAsync("setup", [.. NewSide, "--tuple", "tcp/192.0.2.1:25", .. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts)]);

        // Nothing serves the tuple on the new host: the old host's health check refuses, and says why.
        var refused = await CliAsync(_lab.New, ["migrate", "move", "--name", _name, "tcp/192.0.2.1:25"]);
        output.WriteLine(refused.StandardError);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains($"'migrate move' on the peer ({PeerUri}) failed:", refused.StandardError, StringComparison.Ordinal);
        Assert.Contains("Not moving tcp/192.0.2.1:25: the new host does not serve it through the tunnel", refused.StandardError, StringComparison.Ordinal);
        using (var still = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token))
        {
            Assert.StartsWith("old-25 sees", await still.ReadLineAsync(Token), StringComparison.Ordinal);
        }

        using (var journal = JsonDocument.Parse(await File.ReadAllTextAsync(Journal(_lab.New), Token)))
        {
            var last = journal.RootElement.GetProperty("peer").GetProperty("answers").EnumerateArray().Last();
            Assert.Equal("move tcp/192.0.2.1:25", last.GetProperty("request").GetString());
            Assert.False(last.GetProperty("ok").GetBoolean());
            Assert.Contains(last.GetProperty("answer").EnumerateArray(), a => a.GetString()!.StartsWith("Not moving tcp/192.0.2.1:25", StringComparison.Ordinal));
        }

        await NewAsync("teardown", []);
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
    }

    [Fact(Timeout = 300_000)]
    public async Task A_peer_that_does_not_answer_within_the_timeout_is_given_up_on_and_nothing_changes_on_either_host()
    {
        await using var tunnels = await StartTunnelsAsync();
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        string[] slow = [.. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts)[..^2], "--peer-timeout", "4s"];
        slow[Array.IndexOf(slow, "--peer-command") + 1] = $"sleep 60; {DotnetPath} {Artifacts.Cli}";

        var started = System.Diagnostics.Stopwatch.StartNew();
        var result = await CliAsync(_lab.New, ["migrate", "setup", "--name", _name, .. NewSide, "--tuple", "tcp/192.0.2.1:25", .. slow]);
        output.WriteLine($"{result.ExitCode} after {started.Elapsed}: {result.StandardError}");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"{PeerUri} did not answer within 4 s", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("--peer-timeout", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("Nothing was changed on either host", result.StandardError, StringComparison.Ordinal);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(50), $"The call was not cut at its bound: {started.Elapsed}.");

        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.Old);
        AssertNoJournal(_lab.New);
    }

    [Fact(Timeout = 300_000)]
    public async Task A_setup_that_fails_on_the_old_host_after_the_new_host_is_set_up_is_undone_on_both_hosts()
    {
        await using var tunnels = await StartTunnelsAsync();

        // A real reason for the old host to refuse: another migration there already owns the tunnel device.
        var other = _name + "x";
        await OldAsync("setup", ["--name", other, "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", "4343"]);
        var oldBefore = await SnapshotAsync(_lab.Old);
        var newBefore = await SnapshotAsync(_lab.New);
        var otherJournal = await File.ReadAllTextAsync(Journal(_lab.Old, other), Token);

        var result = await CliAsync(_lab.New, ["migrate", "setup", "--name", _name, .. NewSide, "--tuple", "tcp/192.0.2.1:25",
            .. PeerOptions(_sshd.ClientKey, _sshd.KnownHosts), "--json"]);
        output.WriteLine($"{result.ExitCode}:\n{result.StandardError}\n{result.StandardOutput}");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"The setup on the old host ({PeerUri}) failed:", result.StandardError, StringComparison.Ordinal);
        Assert.Contains($"Tunnel device {Tunnel} already belongs to migration '{other}'", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("This host's side (new host) was undone", result.StandardError, StringComparison.Ordinal);
        using (var answer = JsonDocument.Parse(result.StandardOutput))
        {
            Assert.False(answer.RootElement.GetProperty("ok").GetBoolean());
            Assert.Contains(answer.RootElement.GetProperty("problems").EnumerateArray(),
                p => p.GetString()!.Contains("already belongs to migration", StringComparison.Ordinal));
        }

        Assert.Equal(oldBefore, await SnapshotAsync(_lab.Old));
        Assert.Equal(newBefore, await SnapshotAsync(_lab.New));
        AssertNoJournal(_lab.New);
        Assert.False(File.Exists(Journal(_lab.Old)), "The old host kept a journal of the failed setup.");
        Assert.Equal(otherJournal, await File.ReadAllTextAsync(Journal(_lab.Old, other), Token));

        await OldAsync("teardown", ["--name", other]);
    }

    private static string[] NewSide => ["--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}"];

    private string[] PeerOptions(string key, string knownHosts) =>
    [
        "--peer", PeerUri, "--ssh-key", key, "--ssh-known-hosts", knownHosts,
        // The repository's own CLI on the old host, with that host's state (the namespaces share one file system).
        "--peer-command", $"{DotnetPath} {Artifacts.Cli}", "--peer-state-dir", StateDirectory(_lab.Old), "--peer-timeout", "120s",
    ];

    // sshd gives the session its own PATH: name dotnet by its full path.
    private static string DotnetPath => Environment.ProcessPath is { } path && Path.GetFileName(path) == "dotnet" ? path : "/usr/bin/dotnet";

    private string Journal(NetworkNamespace host, string? name = null) =>
        Directory.GetFiles(Path.Combine(StateDirectory(host), ".migrations"), "migration.json", SearchOption.AllDirectories)
            .SingleOrDefault(f => Path.GetFileName(Path.GetDirectoryName(f)!).StartsWith((name ?? _name) + "@", StringComparison.Ordinal))
        ?? Path.Combine(StateDirectory(host), ".migrations", "none", "migration.json");

    /// <summary>The options that make the old host's command drive the new host through <paramref name="sshd"/>.</summary>
    private string[] NewHostPeerOptions(string peer, Sshd sshd) =>
    [
        "--peer", peer, "--ssh-key", sshd.ClientKey, "--ssh-known-hosts", sshd.KnownHosts,
        "--peer-command", $"{DotnetPath} {Artifacts.Cli}", "--peer-state-dir", StateDirectory(_lab.New),
    ];

    private static void AssertNoJournal(NetworkNamespace host) =>
        Assert.False(Directory.Exists(Path.Combine(StateDirectory(host), ".migrations")), $"{host} still holds migration state.");

    private Task<string> NewAsync(string verb, string[] arguments) => MigrateAsync(_lab.New, verb, arguments);

    private Task<string> OldAsync(string verb, string[] arguments) => MigrateAsync(_lab.Old, verb, arguments);

    private async Task<string> MigrateAsync(NetworkNamespace host, string verb, string[] arguments)
    {
        string[] name = arguments.Contains("--name") ? [] : ["--name", _name];
        var result = await CliAsync(host, ["migrate", verb, .. name, .. arguments]);
        Assert.True(result.ExitCode == 0, $"switchover migrate {verb} {string.Join(' ', arguments)} on {host} failed ({result.ExitCode}): {result.StandardError}\n" +
            $"sshd:\n{string.Join('\n', _sshd.Log)}");
        return result.StandardOutput;
    }

    private static string StateDirectory(NetworkNamespace host) => MigrationLab.StateDirectory(host);

    private Task<CommandOutput> CliAsync(NetworkNamespace host, string[] arguments) => MigrationLab.CliAsync(host, arguments, Token);

    private Task<MigrationLab.Tunnels> StartTunnelsAsync() => MigrationLab.StartTunnelsAsync(_lab, Token);

    private Task<string> SnapshotAsync(NetworkNamespace host) => HostSnapshot.TakeAsync(host, Token);

    /// <summary>
    /// A real sshd in a lab host's namespace: its own host key, config and authorized key in a temporary directory, a
    /// client key it accepts and one it does not, and known_hosts files that hold its host key, nothing, or another key.
    /// </summary>
    private sealed class Sshd : IAsyncDisposable
    {
        // sshd's privilege separation directory (Debian's build): needed to accept a connection.
        private const string PrivilegeSeparationDirectory = "/run/sshd";
        private readonly string _directory;
        private readonly bool _createdPrivilegeSeparationDirectory;
        private LabProcess? _process;

        private Sshd(string directory, bool createdPrivilegeSeparationDirectory, string name)
        {
            _directory = directory;
            HostName = "sshd-" + name;
            _createdPrivilegeSeparationDirectory = createdPrivilegeSeparationDirectory;
        }

        public string ClientKey => Path.Combine(_directory, "client");

        /// <summary>A host name its known_hosts also holds (resolved through a lab host's own /etc/hosts).</summary>
        public string HostName { get; }

        public string WrongKey => Path.Combine(_directory, "wrong");

        public string KnownHosts => Path.Combine(_directory, "known_hosts");

        public string EmptyKnownHosts => Path.Combine(_directory, "known_hosts.empty");

        public string WrongKnownHosts => Path.Combine(_directory, "known_hosts.other");

        public IReadOnlyList<string> Log => _process?.OutputLines ?? [];

        public static async Task<Sshd> StartAsync(NetworkNamespace host, IPAddress address, string name, CancellationToken cancellationToken)
        {
            var directory = Directory.CreateTempSubdirectory($"switchover-sshd-{name}-").FullName;
            var created = !Directory.Exists(PrivilegeSeparationDirectory);
            if (created)
            {
                Directory.CreateDirectory(PrivilegeSeparationDirectory);
            }

            var sshd = new Sshd(directory, created, name);
            try
            {
                foreach (var key in new[] { "host", "other-host", "client", "wrong" })
                {
                    await CommandRunnerAsync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", $"{key}@{name}", "-f", Path.Combine(directory, key)], cancellationToken);
                }

                File.Copy(Path.Combine(directory, "client.pub"), Path.Combine(directory, "authorized_keys"));
                await File.WriteAllTextAsync(sshd.KnownHosts, $"{address},{sshd.HostName} {PublicKey(directory, "host")}\n", cancellationToken);
                await File.WriteAllTextAsync(sshd.EmptyKnownHosts, string.Empty, cancellationToken);
                await File.WriteAllTextAsync(sshd.WrongKnownHosts, $"{address} {PublicKey(directory, "other-host")}\n", cancellationToken);
                var config = Path.Combine(directory, "sshd_config");
                await File.WriteAllTextAsync(config, $"""
                    ListenAddress {address}:22
                    HostKey {directory}/host
                    AuthorizedKeysFile {directory}/authorized_keys
                    PermitRootLogin prohibit-password
                    PasswordAuthentication no
                    KbdInteractiveAuthentication no
                    StrictModes no
                    UsePAM no
                    PidFile {directory}/sshd.pid

                    """, cancellationToken);

                // sshd must be started by its absolute path (it re-executes itself for each connection).
                sshd._process = host.StartProcess("/usr/sbin/sshd", ["-D", "-e", "-f", config]);
                await sshd._process.WaitForOutputAsync($"Server listening on {address} port 22", TimeSpan.FromSeconds(20), cancellationToken);
                return sshd;
            }
            catch
            {
                await sshd.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_process is not null)
            {
                _process.SendSignal(Signals.Terminate);
                using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await Record.ExceptionAsync(() => _process.Exited.WaitAsync(wait.Token));
                _process.Kill();
                await _process.DisposeAsync();
            }

            Directory.Delete(_directory, recursive: true);
            if (_createdPrivilegeSeparationDirectory)
            {
                Directory.Delete(PrivilegeSeparationDirectory);
            }
        }

        private static string PublicKey(string directory, string key) =>
            string.Join(' ', File.ReadAllText(Path.Combine(directory, key + ".pub")).Split(' ').Take(2));

        private static async Task CommandRunnerAsync(string program, string[] arguments, CancellationToken cancellationToken)
        {
            using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments)
            {
                RedirectStandardError = true, RedirectStandardOutput = true,
            })!;
            var error = process.StandardError.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', arguments)} failed: {await error}");
        }
    }
}
