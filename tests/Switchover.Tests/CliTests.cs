using Switchover.Cli;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Tests;

public sealed class CliTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-cli-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact(Timeout = 10000)]
    public async Task Status_shows_each_generation_with_its_state_age_ports_and_connection_counts()
    {
        var name = NamespaceName.Parse("shop");
        var started = new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);
        var state = NamespaceState.Empty(name)
            .With(new GenerationRecord(1, 301, 5, GenerationState.Draining, started, [new PortMapping(8080, 40001)]))
            .With(new GenerationRecord(2, 302, 5, GenerationState.Active, started.AddSeconds(90), [new PortMapping(8080, 40002)]))
            .With(new GenerationRecord(3, 303, 5, GenerationState.Starting, started.AddSeconds(95), [new PortMapping(8080, 40003)]));
        var store = new StateStore(_root, name);
        using (var held = await store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None))
        {
            held.Write(state);
        }

        var runner = new RecordingRunner
        {
            Answer = c => c.FileName == "conntrack" && c.Arguments[^1] == "40002"
                ? new CommandResult(0, "tcp      6 431999 ESTABLISHED src=192.0.2.2 dst=192.0.2.1 sport=5 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=40002 dport=5 [ASSURED] mark=0 use=1\n", string.Empty, TimeSpan.Zero)
                : new CommandResult(0, string.Empty, string.Empty, TimeSpan.Zero),
        };
        var collector = new StatusCollector(runner, "nft", "conntrack", new FixedTime(started.AddSeconds(100)), p => p.Pid != 303);

        var report = await collector.CollectAsync(_root, name, CancellationToken.None);
        var text = StatusTable.Render(report);

        Assert.Contains("tcp/8080 -> :40002 (generation 2)", text, StringComparison.Ordinal);
        var rows = text.Split('\n').Where(l => l.TrimStart().Length > 0 && char.IsDigit(l.TrimStart()[0])).ToList();
        Assert.Equal(3, rows.Count);
        Assert.Matches(@"^\s+3\s+303\s+dead\s", rows[0]);
        Assert.Matches(@"^\s+2\s+302\s+active\s+10s\s+8080\s+40002\s+1\s+0\s+0$", rows[1]);
        Assert.Matches(@"^\s+1\s+301\s+draining\s+1m40s\s+8080\s+40001\s+0\s+0\s+0$", rows[2]);
        Assert.Contains("\"state\": \"dead\"", StatusJson.Serialize(report), StringComparison.Ordinal);
    }

    [Theory(Timeout = 10000)]
    [InlineData("cleanup")]
    [InlineData("cleanup", "--namespace", "x\"; flush ruleset")]
    [InlineData("status", "--bogus")]
    public async Task Usage_errors_exit_with_code_2_and_touch_nothing(params string[] args)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync([.. args, "--state-dir", _root, "--nft", "/nonexistent/nft"],
            new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(2, code);
        Assert.StartsWith("switchover: ", error.ToString(), StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Theory(Timeout = 10000)]
    [InlineData("status --bogus", "switchover status --help")]
    [InlineData("migrate finalize --bogus", "switchover migrate finalize --help")]
    [InlineData("tunnel status --bogus", "switchover tunnel status --help")]
    [InlineData("--bogus", "switchover --help")]
    public async Task A_usage_error_names_the_help_of_the_command_it_is_in_with_its_whole_path(string args, string help)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync(args.Split(' '), new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(2, code);
        Assert.EndsWith($"See '{help}'.", error.ToString().TrimEnd(), StringComparison.Ordinal);
    }

    [Theory(Timeout = 10000)]
    [InlineData("0x30002f")]
    [InlineData("65536")]
    public async Task A_migration_mark_in_the_hosting_generations_bits_is_refused_before_anything_runs(string mark)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync(
            ["migrate", "setup", "--name", "mail", "--side", "old", "--local", "192.0.2.2", "--remote", "198.51.100.2", "--key", "42", "--mark", mark,
                "--state-dir", _root],
            new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(2, code);
        Assert.Contains("uses the bits 0x00ff0000, where Switchover hosting keeps its generations' connection marks", error.ToString(), StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Theory(Timeout = 10000)]
    [InlineData("migrate", "setup", "--name", "mail", "--side", "old", "--local", "192.0.2.2", "--remote", "198.51.100.2", "--key", "42")]
    [InlineData("tunnel", "run", "--name", "gre0", "--local", "192.0.2.2", "--remote", "198.51.100.2")]
    public async Task An_unknown_encapsulation_is_a_usage_error_that_names_the_choices_and_changes_nothing(params string[] args)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync([.. args, "--encapsulation", "vxlan", .. args[0] == "migrate" ? new[] { "--state-dir", _root } : []],
            new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(2, code);
        Assert.Contains("--encapsulation 'vxlan' is not known: use gre (IP protocol 47) or udp (GRE in UDP, port 4754), the same on both hosts.", error.ToString(), StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root));
    }

    [Fact]
    public void Migrate_status_names_the_encapsulation_and_the_refused_sends()
    {
        var status = new Switchover.Migration.Plan.MigrationStatus("mail", Switchover.Migration.Model.MigrationSide.Old, "gre-sw", "192.0.2.1", "203.0.113.1",
            true, 5, 6, [], null, [], new Switchover.Migration.Gre.TunnelCounters { TxPackets = 6, TxRefused = 3 }, Encapsulation: "udp");

        var text = MigrateCommand.Render(status);

        Assert.Contains("  tunnel  gre-sw 192.0.2.1 -> 203.0.113.1 (GRE in UDP), up", text, StringComparison.Ordinal);
        Assert.Contains("3 refused", text, StringComparison.Ordinal);
        Assert.Contains("(GRE), up", MigrateCommand.Render(status with { Encapsulation = "gre" }), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(42, "42s")]
    [InlineData(185, "3m05s")]
    [InlineData(7500, "2h05m")]
    [InlineData(273600, "3d04h")]
    public void Ages_read_at_a_glance(long seconds, string expected) => Assert.Equal(expected, StatusTable.FormatAge(seconds));

    private sealed class FixedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }
}
