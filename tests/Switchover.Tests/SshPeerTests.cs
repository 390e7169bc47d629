using System.Diagnostics;
using Switchover.Migration.Remote;
using Switchover.Processes;

namespace Switchover.Tests;

public sealed class SshPeerTests
{
    private static readonly PeerConnection Peer = new("ssh://admin@192.0.2.1:2222", "/etc/switchover/id_ed25519", "/etc/switchover/known_hosts",
        "dotnet /opt/switchover/switchover.dll", "/run/switchover", TimeSpan.FromSeconds(60));

    [Theory]
    [InlineData("ssh://192.0.2.1", null, "192.0.2.1", 22)]
    [InlineData("ssh://root@192.0.2.1", "root", "192.0.2.1", 22)]
    [InlineData("ssh://admin@old.example:2222", "admin", "old.example", 2222)]
    [InlineData("ssh://[2001:db8::1]:2200", null, "2001:db8::1", 2200)]
    [InlineData("ssh://op.s@[2001:db8::1]", "op.s", "2001:db8::1", 22)]
    public void A_peer_address_is_read_from_an_ssh_uri(string text, string? user, string host, int port)
    {
        var address = PeerAddress.Parse(text);

        Assert.Equal(new PeerAddress(user, host, port), address);
        Assert.Equal(text, address.ToString());
    }

    [Theory]
    [InlineData("192.0.2.1", "is not an ssh:// address")]
    [InlineData("ssh://-oProxyCommand=touch%20x", "is not a host name or address")]
    [InlineData("ssh://root@192.0.2.1:0", "the port must be a number 1-65535")]
    [InlineData("ssh://root@192.0.2.1:22x", "the port must be a number 1-65535")]
    [InlineData("ssh://ro;ot@192.0.2.1", "must be made of letters")]
    [InlineData("ssh://[2001:db8::1", "needs its closing ']'")]
    [InlineData("ssh://root@", "is not a host name or address")]
    public void A_bad_peer_address_is_refused_with_the_form_to_write(string text, string message)
    {
        var error = PeerAddress.TryParse(text, out var address);

        Assert.Null(address);
        Assert.Contains(message, error, StringComparison.Ordinal);
    }

    [Fact]
    public void The_ssh_command_line_forces_batch_mode_strict_host_keys_the_named_files_and_timeouts()
    {
        var arguments = SshCommandLine.Build(Peer, ["migrate", "status", "--name", "mail"]);

        Assert.Equal(
        [
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/etc/switchover/known_hosts", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-i", "/etc/switchover/id_ed25519", "-p", "2222", "-T", "-l", "admin", "--", "192.0.2.1",
            "dotnet /opt/switchover/switchover.dll migrate status --name mail",
        ], arguments);
    }

    [Fact]
    public void Where_ssh_connects_is_read_from_its_own_configuration_with_the_same_options_and_no_remote_command()
    {
        var arguments = SshCommandLine.Configuration(Peer);

        Assert.Equal(["-G", "--", "192.0.2.1"], arguments.TakeLast(3));
        Assert.Contains("StrictHostKeyChecking=yes", arguments);
        Assert.DoesNotContain(arguments, a => a.Contains("migrate", StringComparison.Ordinal));

        // As OpenSSH 9.2's 'ssh -G' prints it (an ssh_config alias already applied: "hostname" is the real host).
        const string printed = "host oldbox\nuser root\nhostname old.example\nport 2222\naddressfamily inet6\nbatchmode yes\n";
        Assert.Equal(("old.example", 2222, System.Net.Sockets.AddressFamily.InterNetworkV6), SshCommandLine.ParseConfiguration(printed));
        Assert.Equal(("192.0.2.1", 22, System.Net.Sockets.AddressFamily.Unspecified), SshCommandLine.ParseConfiguration("hostname 192.0.2.1\nport 22\naddressfamily any\n"));
        Assert.Null(SshCommandLine.ParseConfiguration("user root\nport 22\n"));
        Assert.Null(SshCommandLine.ParseConfiguration("hostname old.example\nport 0\n"));
    }

    [Fact]
    public void A_known_hosts_path_with_a_space_is_quoted_for_ssh_and_a_short_timeout_shortens_the_connect_timeout()
    {
        var arguments = SshCommandLine.Build(Peer with { KnownHostsFile = "/srv/my keys/known_hosts", Timeout = TimeSpan.FromSeconds(6) }, []);

        Assert.Contains("UserKnownHostsFile=\"/srv/my keys/known_hosts\"", arguments);
        Assert.Contains("ConnectTimeout=3", arguments);
    }

    [Theory]
    [InlineData("tcp/192.0.2.1:25", "tcp/192.0.2.1:25")]
    [InlineData("", "''")]
    [InlineData("a b", "'a b'")]
    [InlineData("it's", "'it'\\''s'")]
    [InlineData("$(touch /tmp/x); `id` | & > *", "'$(touch /tmp/x); `id` | & > *'")]
    [InlineData("tcp/[2001:db8::1]:25", "'tcp/[2001:db8::1]:25'")]
    public void An_argument_is_quoted_for_the_remote_shell_only_when_it_needs_it(string argument, string quoted) =>
        Assert.Equal(quoted, SshCommandLine.Quote(argument));

    [Fact]
    public void A_posix_shell_reads_the_remote_command_back_into_exactly_the_arguments_given()
    {
        string[] arguments = ["migrate", "setup", "", "a b", "it's", "\"quoted\"", "$HOME", "`id`", "a;b&&c|d", "tab\there", "line\nbreak", "ünïcode", "*", "~", "#x"];

        // The remote's shell as ssh hands it the string: sh -c STRING (printf prints each argument on its own, NUL-terminated).
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(SshCommandLine.RemoteCommand("printf '%s\\0'", arguments));
        using var shell = Process.Start(start)!;
        var printed = shell.StandardOutput.ReadToEnd();
        Assert.True(shell.WaitForExit(10_000));

        Assert.Equal(arguments, printed.Split('\0')[..^1]);
    }

    [Theory]
    [InlineData(255, "No ED25519 host key is known for 192.0.2.1 and you have requested strict checking.\nHost key verification failed.", SshFailureKind.HostKeyUnknown)]
    [InlineData(255, "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key for 192.0.2.1 has changed and you have requested strict checking.\nHost key verification failed.", SshFailureKind.HostKeyChanged)]
    [InlineData(255, "root@192.0.2.1: Permission denied (publickey).", SshFailureKind.PermissionDenied)]
    [InlineData(255, "Warning: Identity file /nope not accessible: No such file or directory.\nroot@192.0.2.1: Permission denied (publickey).", SshFailureKind.KeyUnreadable)]
    [InlineData(255, "Load key \"/tmp/k\": invalid format\nroot@192.0.2.1: Permission denied (publickey).", SshFailureKind.KeyUnreadable)]
    [InlineData(255, "ssh: connect to host 192.0.2.1 port 22: Connection timed out", SshFailureKind.Unreachable)]
    [InlineData(255, "ssh: connect to host 192.0.2.1 port 22: Connection refused", SshFailureKind.Unreachable)]
    [InlineData(255, "ssh: Could not resolve hostname old.example: Name or service not known", SshFailureKind.Unreachable)]
    [InlineData(255, "Timeout, server 192.0.2.1 not responding.", SshFailureKind.Unreachable)]
    [InlineData(255, "Connection to 192.0.2.1 closed by remote host.", SshFailureKind.Unreachable)]
    [InlineData(255, "something new", SshFailureKind.Other)]
    [InlineData(127, "bash: line 1: switchover: command not found", SshFailureKind.RemoteProgramMissing)]
    [InlineData(1, "switchover: refused", SshFailureKind.None)]
    [InlineData(0, "", SshFailureKind.None)]
    public void Ssh_failures_are_told_apart_by_exit_code_and_standard_error(int exitCode, string standardError, SshFailureKind kind) =>
        Assert.Equal(kind, SshFailure.Classify(exitCode, standardError));

    [Fact]
    public async Task An_unknown_host_key_is_a_peer_error_that_says_how_to_add_the_key_and_that_nothing_changed()
    {
        var runner = new RecordingRunner
        {
            Answer = _ => new CommandResult(255, string.Empty, "No ED25519 host key is known for 192.0.2.1 and you have requested strict checking.\nHost key verification failed.\n", TimeSpan.Zero),
        };

        var error = await Assert.ThrowsAsync<PeerException>(() => new PeerClient(runner, Peer).CheckAsync(CancellationToken.None));

        Assert.Equal(SshFailureKind.HostKeyUnknown, error.Kind);
        Assert.Contains("ssh-keyscan -p 2222 192.0.2.1 >> /etc/switchover/known_hosts", error.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing ran on the peer", error.Message, StringComparison.Ordinal);
        var command = Assert.Single(runner.Commands);
        Assert.Equal("ssh", command.FileName);
        Assert.Equal("dotnet /opt/switchover/switchover.dll --version", command.Arguments[^1]);
        Assert.Equal(TimeSpan.FromSeconds(60), command.Timeout);
    }

    [Fact]
    public async Task A_wrong_key_is_a_peer_error_that_names_the_key_and_authorized_keys()
    {
        var runner = new RecordingRunner { Answer = _ => new CommandResult(255, string.Empty, "admin@192.0.2.1: Permission denied (publickey).\n", TimeSpan.Zero) };

        var error = await Assert.ThrowsAsync<PeerException>(() => new PeerClient(runner, Peer).MigrateAsync("move", ["--name", "mail"], TimeSpan.Zero, CancellationToken.None));

        Assert.Equal(SshFailureKind.PermissionDenied, error.Kind);
        Assert.Contains("refused the key /etc/switchover/id_ed25519", error.Message, StringComparison.Ordinal);
        Assert.Contains("/etc/switchover/id_ed25519.pub to admin's ~/.ssh/authorized_keys", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_remote_programs_json_answer_is_read_whether_it_succeeded_or_not_and_a_wait_extends_the_bound()
    {
        var refused = MigrationAnswer.Failed(["Not moving tcp/192.0.2.1:25: the new host does not serve it through the tunnel"]);
        var runner = new RecordingRunner { Answer = _ => new CommandResult(1, refused.ToJson() + "\n", "switchover: Not moving ...\n", TimeSpan.Zero) };

        var answer = await new PeerClient(runner, Peer).MigrateAsync("move", ["--name", "mail", "tcp/192.0.2.1:25", "--wait", "30s"], TimeSpan.FromSeconds(30),
            CancellationToken.None);

        Assert.False(answer.Ok);
        Assert.Equal(refused.Problems, answer.Problems);
        var command = Assert.Single(runner.Commands);
        Assert.Equal("dotnet /opt/switchover/switchover.dll migrate move --name mail tcp/192.0.2.1:25 --wait 30s --json --state-dir /run/switchover",
            command.Arguments[^1]);
        Assert.Equal(TimeSpan.FromSeconds(90), command.Timeout);
    }

    [Fact]
    public async Task A_peer_that_answers_without_json_is_an_error_that_carries_what_it_said()
    {
        var runner = new RecordingRunner { Answer = _ => new CommandResult(2, string.Empty, "Unrecognized command or argument '--json'.\n", TimeSpan.Zero) };

        var error = await Assert.ThrowsAsync<PeerException>(() => new PeerClient(runner, Peer).MigrateAsync("setup", [], TimeSpan.Zero, CancellationToken.None));

        Assert.Contains("exited with 2 and gave no JSON answer: Unrecognized command or argument '--json'.", error.Message, StringComparison.Ordinal);
        Assert.Contains("same version on both hosts", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_peers_setup_is_the_other_side_of_the_tunnel_with_this_hosts_encapsulation_and_plain_GRE_adds_no_option()
    {
        var spec = new Switchover.Migration.Model.MigrationSpec(NamespaceName.Parse("mail"),
            Switchover.Migration.Model.MigrationSide.Old, "gre-sw", System.Net.IPAddress.Parse("192.0.2.1"), System.Net.IPAddress.Parse("203.0.113.1"),
            42, 1464, 0x2f, 47, [Switchover.Netfilter.SteeredTuple.Parse("tcp/192.0.2.1:25")])
        {
            Encapsulation = Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp,
        };

        Assert.Equal(
        [
            "--name", "mail", "--side", "new", "--tunnel", "gre-sw", "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", "42", "--mtu", "1464",
            "--link-network", spec.EffectiveLinkNetwork.ToString(), "--encapsulation", "udp", "--tuple", "tcp/192.0.2.1:25",
        ], PeerMigration.PeerSetupArguments(spec, dryRun: false));
        Assert.Equal("--dry-run", PeerMigration.PeerSetupArguments(spec, dryRun: true)[^1]);

        var gre = PeerMigration.PeerSetupArguments(spec with { Encapsulation = Switchover.Migration.Gre.TunnelEncapsulation.Gre }, dryRun: false);
        Assert.DoesNotContain("--encapsulation", gre);
        Assert.Equal(PeerMigration.PeerSetupArguments(spec, dryRun: false).Where(a => a is not ("--encapsulation" or "udp")), gre);
    }

    [Fact]
    public void A_peer_connection_with_missing_files_or_a_bad_command_lists_every_problem()
    {
        var errors = (Peer with { Command = "switchover\nrm -rf /", Timeout = TimeSpan.Zero }).Validate();

        Assert.Contains(errors, e => e.StartsWith("--ssh-key '/etc/switchover/id_ed25519' does not exist", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("--ssh-known-hosts '/etc/switchover/known_hosts' does not exist", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("--peer-command", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("--peer-timeout", StringComparison.Ordinal));
    }

    [Fact]
    public void The_journal_keeps_the_last_answers_of_the_peer_only()
    {
        var peer = Peer;
        for (var i = 0; i < PeerConnection.MaxAnswers + 5; i++)
        {
            peer = peer.WithAnswer(new PeerExchange(DateTimeOffset.UnixEpoch, $"call {i}", true, []));
        }

        Assert.Equal(PeerConnection.MaxAnswers, peer.Answers.Count);
        Assert.Equal($"call {PeerConnection.MaxAnswers + 4}", peer.Answers[^1].Request);
    }
}
