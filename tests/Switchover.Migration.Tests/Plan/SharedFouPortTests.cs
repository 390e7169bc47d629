using System.Net;
using Switchover.Migration.Gre;
using Switchover.Migration.Model;
using Switchover.Migration.Plan;
using Switchover.Netfilter;
using Switchover.Processes;

namespace Switchover.Migration.Tests.Plan;

/// <summary>
/// Two kernel-dataplane GRE-in-UDP migrations on one host share its one FOU port 4754: the first opens it (owned), the
/// second finds it and shares it, and only the last to go removes it. A port that no migration made is never removed.
/// Against a recorded host whose FOU ports behave as the kernel's do (`ip fou add` of an existing port: File exists).
/// </summary>
public sealed class SharedFouPortTests : IDisposable
{
    private const string AddFou = "ip fou add port 4754 ipproto 47";
    private const string DeleteFou = "ip fou del port 4754";
    private readonly string _stateRoot = Directory.CreateTempSubdirectory("switchover-fou-").FullName;
    private readonly FakeHost _host = new();

    public void Dispose() => Directory.Delete(_stateRoot, recursive: true);

    [Fact(Timeout = 30_000)]
    public async Task The_first_migration_opens_the_port_and_owns_it_and_a_second_shares_it_without_adding_it_again()
    {
        var host = Host();
        var first = await host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        Assert.Equal("fou:4754:4", first.Changes[0].Id);
        Assert.Equal([AddFou], _host.Runner.Lines.Where(l => l.StartsWith("ip fou", StringComparison.Ordinal)));
        Assert.Equal([new FouPortFact(false, 4754, 47)], _host.FouPorts);

        _host.Runner.Commands.Clear();
        var second = await host.SetupAsync(Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        Assert.Equal("fou-shared:4754:4", second.Changes[0].Id);
        Assert.Contains("share the port migration 'ma' opened", second.Changes[0].Description, StringComparison.Ordinal);
        Assert.Empty(second.Changes[0].Apply);
        Assert.DoesNotContain(AddFou, _host.Runner.Lines);
        Assert.Contains("ip -j fou show", _host.Runner.Lines);

        var journal = await host.ReadAsync(NamespaceName.Parse("mb"), CancellationToken.None);
        Assert.Equal("fou-shared:4754:4", journal!.Applied[0].Id);
        Assert.Equal([DeleteFou], journal.Applied[0].Undo.Select(c => c.ToString()));
    }

    [Fact(Timeout = 30_000)]
    public async Task Tearing_down_the_second_leaves_the_port_to_the_first_and_tearing_down_the_last_removes_it()
    {
        var host = Host();
        await host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        await host.SetupAsync(Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None);

        _host.Runner.Commands.Clear();
        var dry = await host.TeardownAsync(NamespaceName.Parse("mb"), dryRun: true, CancellationToken.None);
        Assert.Equal("keep the FOU port 4754 (IPv4): migration 'ma' still uses it", dry.Changes[^1].Description);
        var second = await host.TeardownAsync(NamespaceName.Parse("mb"), dryRun: false, CancellationToken.None);
        Assert.Equal("keep the FOU port 4754 (IPv4): migration 'ma' still uses it", second.Changes[^1].Description);
        Assert.DoesNotContain(DeleteFou, _host.Runner.Lines);
        Assert.Contains("ip link del dev gre-mb", _host.Runner.Lines);
        Assert.Equal([new FouPortFact(false, 4754, 47)], _host.FouPorts);

        _host.Runner.Commands.Clear();
        await host.TeardownAsync(NamespaceName.Parse("ma"), dryRun: false, CancellationToken.None);
        Assert.Equal([DeleteFou], _host.Runner.Lines.Where(l => l.StartsWith("ip fou", StringComparison.Ordinal)));
        Assert.True(_host.Runner.Lines.ToList().IndexOf("ip link del dev gre-ma") < _host.Runner.Lines.ToList().IndexOf(DeleteFou),
            "The FOU port went before the link that sends FOU: " + string.Join('\n', _host.Runner.Lines));
        Assert.Empty(_host.FouPorts);
        Assert.False(Directory.Exists(Path.Combine(_stateRoot, MigrationHost.Directory)), "Migration state is left after the last teardown.");
    }

    [Fact(Timeout = 30_000)]
    public async Task When_the_owner_goes_first_the_sharer_is_the_last_user_and_removes_the_port()
    {
        var host = Host();
        await host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        await host.SetupAsync(Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None);

        _host.Runner.Commands.Clear();
        var owner = await host.TeardownAsync(NamespaceName.Parse("ma"), dryRun: false, CancellationToken.None);
        Assert.Equal("keep the FOU port 4754 (IPv4): migration 'mb' still uses it", owner.Changes[^1].Description);
        Assert.DoesNotContain(DeleteFou, _host.Runner.Lines);

        await host.TeardownAsync(NamespaceName.Parse("mb"), dryRun: false, CancellationToken.None);
        Assert.Contains(DeleteFou, _host.Runner.Lines);
        Assert.Empty(_host.FouPorts);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_failed_setup_of_the_second_is_undone_but_leaves_the_port_the_first_uses()
    {
        var host = Host();
        await host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        _host.Fail = c => c.ToString().StartsWith("ip addr add", StringComparison.Ordinal) && c.ToString().EndsWith("dev gre-mb", StringComparison.Ordinal);

        _host.Runner.Commands.Clear();
        var e = await Assert.ThrowsAsync<MigrationException>(() =>
            host.SetupAsync(Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None));
        Assert.StartsWith("Setup failed and was undone:", Assert.Single(e.Problems), StringComparison.Ordinal);
        Assert.Contains("ip link del dev gre-mb", _host.Runner.Lines);
        Assert.DoesNotContain(DeleteFou, _host.Runner.Lines);
        Assert.Equal([new FouPortFact(false, 4754, 47)], _host.FouPorts);
        Assert.Null(await host.ReadAsync(NamespaceName.Parse("mb"), CancellationToken.None));
    }

    [Fact(Timeout = 30_000)]
    public async Task A_GRE_port_that_no_migration_made_is_used_and_never_removed_by_teardown_nor_by_a_failed_setup()
    {
        _host.FouPorts.Add(new FouPortFact(false, 4754, 47));
        var host = Host();
        var setup = await host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        Assert.Equal("fou-foreign:4754:4", setup.Changes[0].Id);
        Assert.Contains("left in place", setup.Changes[0].Description, StringComparison.Ordinal);
        Assert.Empty(setup.Changes[0].Undo);

        // A second migration finds it too, and it is still not a migration's.
        var second = await host.SetupAsync(Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None);
        Assert.Equal("fou-foreign:4754:4", second.Changes[0].Id);

        await host.TeardownAsync(NamespaceName.Parse("ma"), dryRun: false, CancellationToken.None);
        await host.TeardownAsync(NamespaceName.Parse("mb"), dryRun: false, CancellationToken.None);

        _host.Fail = c => c.ToString().StartsWith("ip addr add", StringComparison.Ordinal) && c.ToString().EndsWith("dev gre-mc", StringComparison.Ordinal);
        await Assert.ThrowsAsync<MigrationException>(() =>
            host.SetupAsync(Spec("mc", "gre-mc", 103), createKernelTunnel: true, dryRun: false, CancellationToken.None));

        Assert.DoesNotContain(_host.Runner.Lines, l => l.StartsWith("ip fou", StringComparison.Ordinal));
        Assert.Equal([new FouPortFact(false, 4754, 47)], _host.FouPorts);
    }

    [Theory(Timeout = 30_000)]
    [InlineData(4, "IP protocol 4")]
    [InlineData(null, "GUE")]
    public async Task A_port_4754_for_another_protocol_is_refused_with_what_to_do_and_nothing_changes(int? protocol, string what)
    {
        _host.FouPorts.Add(new FouPortFact(false, 4754, protocol));
        var host = Host();

        var e = await Assert.ThrowsAsync<MigrationException>(() =>
            host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None));
        Assert.Equal($"UDP port 4754 (IPv4) is already a FOU port for {what}, not GRE ('ip fou show': {_host.FouPorts[0]}): GRE in UDP cannot be " +
            "received there. It is not this migration's to change: remove it if nothing needs it (ip fou del port 4754), or use --encapsulation gre on " +
            "both hosts. Nothing was changed.", e.Problems.Single());
        Assert.Empty(_host.Changes);
        Assert.Equal([new FouPortFact(false, 4754, protocol)], _host.FouPorts);
        Assert.False(Directory.Exists(Path.Combine(_stateRoot, MigrationHost.Directory)), "A refused setup left migration state.");
    }

    [Fact(Timeout = 30_000)]
    public async Task A_kernel_without_FOU_is_refused_before_anything_changes_with_modprobe_fou_or_the_userspace_dataplane()
    {
        _host.FouMissing = true;
        var host = Host();

        var e = await Assert.ThrowsAsync<MigrationException>(() =>
            host.SetupAsync(Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None));
        var problem = e.Problems.Single();
        Assert.Equal("modprobe -a fou", _host.Runner.Lines.First(l => l.Contains("fou", StringComparison.Ordinal)));
        Assert.StartsWith("This kernel has no FOU (foo-over-UDP; 'ip fou show': RTNETLINK answers: No such file or directory Error talking to the kernel; " +
            "'modprobe -a fou' failed: modprobe: FATAL: Module fou not found in directory /lib/modules/6.18.0), " +
            "which the kernel's GRE needs for --encapsulation udp. Load it (modprobe fou) and run the setup again, or start the userspace tunnel first " +
            "(switchover tunnel run --dataplane userspace --name gre-ma --local 192.0.2.1 --remote 203.0.113.1", problem, StringComparison.Ordinal);
        Assert.EndsWith("--encapsulation udp), which speaks GRE in UDP itself. Nothing was changed.", problem, StringComparison.Ordinal);
        Assert.Empty(_host.Changes);
        Assert.False(Directory.Exists(Path.Combine(_stateRoot, MigrationHost.Directory)), "A refused setup left migration state.");
    }

    [Fact(Timeout = 30_000)]
    public async Task Plain_GRE_never_asks_for_FOU_so_it_does_not_load_the_module()
    {
        _host.FouMissing = true;
        await Host().SetupAsync(Spec("ma", "gre-ma", 101) with { Encapsulation = TunnelEncapsulation.Gre }, createKernelTunnel: true, dryRun: false, CancellationToken.None);
        Assert.DoesNotContain(_host.Runner.Lines, l => l.Contains("fou", StringComparison.Ordinal));
    }

    [Fact]
    public void Ports_of_ip_fou_show_are_read_with_their_family_protocol_or_GUE_and_no_ports_is_empty()
    {
        Assert.Equal(
            [new FouPortFact(false, 4754, 47), new FouPortFact(true, 4754, 47), new FouPortFact(false, 5555, null)],
            HostFacts.ParseFouPorts("""[{"port":4754,"ipproto":47,"family":"inet"},{"port":4754,"ipproto":47,"family":"inet6"},{"port":5555,"gue":null}]""", ipv6: false));
        Assert.Equal([new FouPortFact(true, 4754, 47)], HostFacts.ParseFouPorts("""[{"port":4754,"ipproto":47}]""", ipv6: true));
        Assert.Empty(HostFacts.ParseFouPorts(string.Empty, ipv6: false));
        Assert.Empty(HostFacts.ParseFouPorts("[]", ipv6: false));
    }

    private MigrationHost Host() => new(_host.Runner, _stateRoot);

    internal static MigrationSpec Spec(string name, string tunnel, uint key) => new(NamespaceName.Parse(name), MigrationSide.Old, tunnel,
        IPAddress.Parse("192.0.2.1"), IPAddress.Parse("203.0.113.1"), key, 1464, MigrationSpec.PickFree, MigrationSpec.PickFree, [])
    {
        Encapsulation = TunnelEncapsulation.GreInUdp,
    };

    /// <summary>One IPv4 host with eth0 (192.0.2.1), nothing set up, and FOU ports that behave as the kernel's.</summary>
    internal sealed class FakeHost
    {
        public FakeHost() => Runner.Answer = Answer;

        public RecordingRunner Runner { get; } = new();

        public List<FouPortFact> FouPorts { get; } = [];

        /// <summary>The kernel has no fou module: `ip fou` fails as it does then.</summary>
        public bool FouMissing { get; set; }

        /// <summary>Commands that fail, to break a setup midway.</summary>
        public Func<Command, bool> Fail { get; set; } = _ => false;

        /// <summary>The commands run that change the host (not the reads, nor loading the fou module, which `ip` would do on other kernels).</summary>
        public IEnumerable<string> Changes => Runner.Lines.Where(l =>
            !l.StartsWith("ip -j", StringComparison.Ordinal) && !l.StartsWith("ip -d -j", StringComparison.Ordinal)
            && !l.StartsWith("sysctl -n", StringComparison.Ordinal) && l != "nft list tables" && !l.StartsWith("modprobe ", StringComparison.Ordinal));

        private CommandResult Answer(Command command)
        {
            var line = command.ToString();
            if (Fail(command))
            {
                return RecordingRunner.Fail("RTNETLINK answers: Invalid argument");
            }

            if (line == "modprobe -a fou" && FouMissing)
            {
                return RecordingRunner.Fail("modprobe: FATAL: Module fou not found in directory /lib/modules/6.18.0", 1);
            }

            if (line.Contains(" fou ", StringComparison.Ordinal) && FouMissing)
            {
                return RecordingRunner.Fail("RTNETLINK answers: No such file or directory\nError talking to the kernel", 1);
            }

            switch (line)
            {
                case "ip -j addr show":
                    return RecordingRunner.Ok("""[{"ifname":"lo","addr_info":[{"local":"127.0.0.1"}]},{"ifname":"eth0","addr_info":[{"local":"192.0.2.1"}]}]""");
                case "ip -j -4 rule show" or "ip -j -6 rule show":
                    return RecordingRunner.Ok("[]");
                case "ip -j fou show" or "ip -j -6 fou show":
                    var ipv6 = line.Contains("-6", StringComparison.Ordinal);
                    return RecordingRunner.Ok("[" + string.Join(',', FouPorts.Where(p => p.IPv6 == ipv6).Select(p =>
                        $$"""{"port":{{p.Port}},{{(p.Protocol is { } proto ? $"\"ipproto\":{proto}" : "\"gue\":null")}},"family":"{{(p.IPv6 ? "inet6" : "inet")}}"}"""))
                        + "]");
                case AddFou:
                    if (FouPorts.Any(p => !p.IPv6 && p.Port == 4754))
                    {
                        return RecordingRunner.Fail("RTNETLINK answers: File exists");
                    }

                    FouPorts.Add(new FouPortFact(false, 4754, 47));
                    return RecordingRunner.Ok();
                case DeleteFou:
                    return FouPorts.RemoveAll(p => !p.IPv6 && p.Port == 4754) == 1 ? RecordingRunner.Ok() : RecordingRunner.Fail("RTNETLINK answers: No such file or directory");
                case "nft list tables":
                    return RecordingRunner.Ok();
            }

            if (line.StartsWith("ip -j route get", StringComparison.Ordinal))
            {
                return RecordingRunner.Ok("""[{"dst":"203.0.113.1","dev":"eth0"}]""");
            }

            if (line.StartsWith("ip -d -j link show", StringComparison.Ordinal))
            {
                return RecordingRunner.Fail("Device does not exist.", 1);
            }

            if (line.StartsWith("ip -j -4 route show", StringComparison.Ordinal) || line.StartsWith("ip -j -6 route show", StringComparison.Ordinal))
            {
                return RecordingRunner.Ok("[]");
            }

            return line.StartsWith("sysctl -n", StringComparison.Ordinal) ? RecordingRunner.Ok("0\n") : RecordingRunner.Ok();
        }
    }
}
