using System.Net;
using Switchover.Migration.Model;
using Switchover.Migration.Plan;
using Switchover.Netfilter;

namespace Switchover.Tests;

public sealed class MigrationPlannerTests
{
    private static readonly MigrationSpec Old = new(NamespaceName.Parse("mail"), MigrationSide.Old, "gre-sw", IPAddress.Parse("192.0.2.1"),
        IPAddress.Parse("203.0.113.1"), 42, 1472, 0x2f, 47, [SteeredTuple.Parse("tcp/192.0.2.1:25")]);

    private static readonly RuleFact[] DefaultRules =
    [
        new(false, 0, "local", new Dictionary<string, string>()), new(false, 32766, "main", new Dictionary<string, string>()),
        new(true, 0, "local", new Dictionary<string, string>()), new(true, 32766, "main", new Dictionary<string, string>()),
    ];

    private static HostFacts Fresh => new([IPAddress.Parse("192.0.2.1"), IPAddress.Loopback], DefaultRules,
        new Dictionary<string, string>
        {
            ["net.ipv4.ip_forward"] = "0", ["net.ipv6.conf.all.forwarding"] = "0", ["net.ipv4.conf.all.rp_filter"] = "2",
            ["net.ipv4.conf.gre-sw.rp_filter"] = "0", ["net.ipv4.conf.gre-sw.accept_local"] = "0",
        },
        "eth0", TunnelDeviceExists: true, HasIPv6: true, [], []);

    [Fact]
    public void The_old_host_gets_the_recipe_in_order_with_exact_undo_of_every_original_value()
    {
        var plan = MigrationPlanner.Plan(Old, Fresh, createKernelTunnel: false);

        Assert.Equal(
        [
            "addr:gre-sw:169.254.43.1/30", "sysctl:net.ipv4.ip_forward", "sysctl:net.ipv6.conf.all.forwarding", "sysctl:net.ipv4.conf.gre-sw.accept_local",
            "sysctl:net.ipv4.conf.all.rp_filter", "route:4:47", "rule:4:100:fwmark 0x2f", "local-rule:4", "route:6:47", "rule:6:100:fwmark 0x2f", "local-rule:6",
            "nft:switchover_mig_mail",
        ], plan.Select(c => c.Id));
        var rpFilter = plan.Single(c => c.Id == "sysctl:net.ipv4.conf.all.rp_filter");
        Assert.Equal(["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=2"], rpFilter.Undo.Single().Arguments);
        var local = plan.Single(c => c.Id == "local-rule:4");
        Assert.Equal(["ip", "-4", "rule", "add", "pref", "200", "lookup", "local"], local.Apply[0].Arguments);
        Assert.Equal(["ip", "-4", "rule", "del", "pref", "0", "lookup", "local"], local.Apply[1].Arguments);
        Assert.Equal(["ip", "-4", "rule", "add", "pref", "0", "lookup", "local"], local.Undo[0].Arguments);
    }

    [Fact]
    public void Planning_again_on_a_host_that_is_set_up_changes_nothing()
    {
        var done = Fresh with
        {
            LocalAddresses = [IPAddress.Parse("192.0.2.1"), IPAddress.Parse("169.254.43.1")],
            Rules =
            [
                new(false, 100, "47", new Dictionary<string, string> { ["fwmark"] = "0x2f" }), new(false, 200, "local", new Dictionary<string, string>()),
                new(true, 100, "47", new Dictionary<string, string> { ["fwmark"] = "0x2f" }), new(true, 200, "local", new Dictionary<string, string>()),
            ],
            Sysctls = new Dictionary<string, string>
            {
                ["net.ipv4.ip_forward"] = "1", ["net.ipv6.conf.all.forwarding"] = "1", ["net.ipv4.conf.all.rp_filter"] = "0",
                ["net.ipv4.conf.gre-sw.rp_filter"] = "0", ["net.ipv4.conf.gre-sw.accept_local"] = "1",
            },
            DefaultRoutes = [(false, "47", "gre-sw"), (true, "47", "gre-sw")],
            NftTables = ["inet switchover_mig_mail"],
        };

        Assert.Empty(MigrationPlanner.Plan(Old, done, createKernelTunnel: false));
    }

    [Fact]
    public void The_new_host_holds_the_moved_address_and_routes_its_traffic_back_through_the_tunnel()
    {
        var spec = Old with { Side = MigrationSide.New, LocalOuter = IPAddress.Parse("203.0.113.1"), RemoteOuter = IPAddress.Parse("192.0.2.1") };
        var facts = Fresh with { LocalAddresses = [IPAddress.Parse("203.0.113.1")] };

        var plan = MigrationPlanner.Plan(spec, facts, createKernelTunnel: false);
        var ids = plan.Select(c => c.Id).ToList();

        Assert.Contains("addr:lo:192.0.2.1", ids);
        Assert.Contains("sysctl:net.ipv4.conf.eth0.accept_local", ids);
        Assert.Contains("rule:4:60:from 192.0.2.1 iif lo", ids);
        Assert.Contains("rule:4:50:to 192.0.2.1 ipproto gre", ids);
        Assert.Contains("rule:4:100:fwmark 0x2f", ids);
        Assert.Contains("ct mark & 0xff00ffff == 0x2f meta mark set 0x2f", plan.Single(c => c.Id == "nft:switchover_mig_mail").Apply[0].Input, StringComparison.Ordinal);
    }

    [Fact]
    public void A_new_host_that_drives_the_old_one_over_ssh_at_a_moved_address_keeps_a_route_to_its_sshd_and_undoes_it()
    {
        var spec = Old with { Side = MigrationSide.New, LocalOuter = IPAddress.Parse("203.0.113.1"), RemoteOuter = IPAddress.Parse("192.0.2.1") };
        var facts = Fresh with { LocalAddresses = [IPAddress.Parse("203.0.113.1")] };

        var plan = MigrationPlanner.Plan(spec with { Control = [new IPEndPoint(IPAddress.Parse("192.0.2.1"), 2222)] }, facts, createKernelTunnel: false);

        var rule = plan.Single(c => c.Id == "rule:4:50:to 192.0.2.1 ipproto tcp dport 2222");
        Assert.Equal(["ip", "-4", "rule", "add", "pref", "50", "to", "192.0.2.1", "ipproto", "tcp", "dport", "2222", "lookup", "main"], rule.Apply.Single().Arguments);
        Assert.Equal(["ip", "-4", "rule", "del", "pref", "50", "to", "192.0.2.1", "ipproto", "tcp", "dport", "2222", "lookup", "main"], rule.Undo.Single().Arguments);

        // Driven from the old host: the replies of this host's sshd to the moved address leave by the uplink.
        var drivenPlan = MigrationPlanner.Plan(spec with { ControlClient = MigrationSpec.ParseSshConnection("192.0.2.1 50122 203.0.113.1 22") }, facts, false);
        var driven = drivenPlan.Select(c => c.Id).ToList();
        var session = drivenPlan.Single(c => c.Id == "rule:4:50:to 192.0.2.1 ipproto tcp sport 22");
        Assert.Equal(["ip", "-4", "rule", "del", "pref", "50", "to", "192.0.2.1", "ipproto", "tcp", "sport", "22", "lookup", "main"], session.Undo.Single().Arguments);

        // The address becomes local only once those rules and the moved local rule are in: before them, the sshd's
        // replies to it would loop into lo and draw a RST that resets the session driving this setup.
        var held = driven.IndexOf("addr:lo:192.0.2.1");
        Assert.True(held > driven.IndexOf("rule:4:50:to 192.0.2.1 ipproto tcp sport 22") && held > driven.IndexOf("rule:4:50:to 192.0.2.1 ipproto gre")
            && held > driven.FindLastIndex(id => id.StartsWith("local-rule:", StringComparison.Ordinal)), string.Join('\n', driven));
        Assert.Null(MigrationSpec.ParseSshConnection("not an ssh connection"));

        // A peer named by a host name that resolves to several moved addresses: a rule for each, once each.
        IPEndPoint[] named = [new(IPAddress.Parse("192.0.2.1"), 22), new(IPAddress.Parse("192.0.2.1"), 22), new(IPAddress.Parse("192.0.2.9"), 22)];
        Assert.Single(MigrationPlanner.Plan(spec with { Control = named }, facts, false), c => c.Id.Contains("dport", StringComparison.Ordinal));

        // Not when the peer is reached at an address that is not moved, nor on the old host.
        Assert.DoesNotContain(MigrationPlanner.Plan(spec with { Control = [new IPEndPoint(IPAddress.Parse("192.0.2.9"), 22)] }, facts, false), c => c.Id.Contains("dport", StringComparison.Ordinal));
        Assert.DoesNotContain(MigrationPlanner.Plan(Old with { Control = [new IPEndPoint(IPAddress.Parse("203.0.113.1"), 22)] }, Fresh, false), c => c.Id.Contains("dport", StringComparison.Ordinal));
    }

    [Fact]
    public void A_moved_IPv6_address_is_held_on_lo_without_a_prefix_route_in_main_which_would_loop_the_outer_GRE_back()
    {
        var spec = Old with
        {
            Side = MigrationSide.New, LocalOuter = IPAddress.Parse("2001:db8:3::1"), RemoteOuter = IPAddress.Parse("2001:db8:2::1"),
            Tuples = [SteeredTuple.Parse("tcp/[2001:db8:2::1]:25"), SteeredTuple.Parse("tcp/192.0.2.1:25")],
        };
        var plan = MigrationPlanner.Plan(spec, Fresh with { LocalAddresses = [IPAddress.Parse("2001:db8:3::1")] }, createKernelTunnel: false);

        Assert.Equal(["ip", "addr", "add", "2001:db8:2::1/128", "dev", "lo", "noprefixroute"], plan.Single(c => c.Id == "addr:lo:2001:db8:2::1").Apply.Single().Arguments);
        Assert.Equal(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"], plan.Single(c => c.Id == "addr:lo:192.0.2.1").Apply.Single().Arguments);
        Assert.Contains("rule:6:50:to 2001:db8:2::1 ipproto gre", plan.Select(c => c.Id));
    }

    [Fact]
    public void A_kernel_tunnel_is_created_with_its_peer_filter_before_it_comes_up_and_both_are_removed_on_undo()
    {
        var plan = MigrationPlanner.Plan(Old, Fresh with { TunnelDeviceExists = false }, createKernelTunnel: true);
        var link = plan[0];

        Assert.Equal("link:gre-sw", link.Id);
        Assert.Equal(
        [
            "ip link add gre-sw type gre local 192.0.2.1 remote 203.0.113.1 ttl 64 key 42",
            "nft -f -",
            "ip link set dev gre-sw mtu 1472 up",
        ], link.Apply.Select(c => string.Join(' ', c.Arguments)));
        Assert.Contains("ip daddr 192.0.2.1 meta l4proto 47 ip saddr != 203.0.113.1 counter name \"stray\" drop", link.Apply[1].Input, StringComparison.Ordinal);
        Assert.Equal(["nft -f -", "ip link del dev gre-sw"], link.Undo.Select(c => string.Join(' ', c.Arguments)));
        Assert.Contains("delete table inet switchover_gre_gre-sw", link.Undo[0].Input, StringComparison.Ordinal);
    }

    [Fact]
    public void With_GRE_in_UDP_the_new_hosts_outer_rules_let_udp_4754_and_a_kernel_FOU_links_GRE_to_the_old_host_leave_by_the_uplink()
    {
        var spec = Old with
        {
            Side = MigrationSide.New, LocalOuter = IPAddress.Parse("203.0.113.1"), RemoteOuter = IPAddress.Parse("192.0.2.1"),
            Encapsulation = Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp,
        };
        var plan = MigrationPlanner.Plan(spec, Fresh with { LocalAddresses = [IPAddress.Parse("203.0.113.1")] }, createKernelTunnel: false);

        var rule = plan.Single(c => c.Id == "rule:4:50:to 192.0.2.1 ipproto udp dport 4754");
        Assert.Equal(["ip", "-4", "rule", "add", "pref", "50", "to", "192.0.2.1", "ipproto", "udp", "dport", "4754", "lookup", "main"], rule.Apply.Single().Arguments);
        // A kernel FOU link's route lookup says GRE, not UDP (fou_build_udp leaves the flow alone): it needs the GRE rule too.
        var gre = plan.Single(c => c.Id == "rule:4:50:to 192.0.2.1 ipproto gre");
        Assert.Equal(["ip", "-4", "rule", "add", "pref", "50", "to", "192.0.2.1", "ipproto", "gre", "lookup", "main"], gre.Apply.Single().Arguments);
        Assert.Equal(["ip", "-4", "rule", "del", "pref", "50", "to", "192.0.2.1", "ipproto", "gre", "lookup", "main"], gre.Undo.Single().Arguments);

        var done = Fresh with
        {
            LocalAddresses = [IPAddress.Parse("203.0.113.1")],
            Rules = [.. DefaultRules, new(false, 50, "main", new Dictionary<string, string> { ["dst"] = "192.0.2.1", ["ipproto"] = "udp", ["dport"] = "4754" }),
                new(false, 50, "main", new Dictionary<string, string> { ["dst"] = "192.0.2.1", ["ipproto"] = "gre" })],
        };
        Assert.DoesNotContain(MigrationPlanner.Plan(spec, done, createKernelTunnel: false), c => c.Id.StartsWith("rule:4:50:", StringComparison.Ordinal));
    }

    [Fact]
    public void A_kernel_GRE_in_UDP_tunnel_opens_the_FOU_port_first_filters_udp_4754_and_closes_the_port_last_on_undo()
    {
        var spec = Old with { Encapsulation = Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp };
        var plan = MigrationPlanner.Plan(spec, Fresh with { TunnelDeviceExists = false }, createKernelTunnel: true);

        Assert.Equal("fou:4754:4", plan[0].Id);
        Assert.Equal(["ip", "fou", "add", "port", "4754", "ipproto", "47"], plan[0].Apply.Single().Arguments);
        Assert.Equal(["ip", "fou", "del", "port", "4754"], plan[0].Undo.Single().Arguments);
        Assert.Equal("link:gre-sw", plan[1].Id);
        Assert.Equal("ip link add gre-sw type gre local 192.0.2.1 remote 203.0.113.1 ttl 64 key 42 encap fou encap-sport 4754 encap-dport 4754",
            string.Join(' ', plan[1].Apply[0].Arguments));
        Assert.Contains("ip daddr 192.0.2.1 udp dport 4754 ip saddr != 203.0.113.1 counter name \"stray\" drop", plan[1].Apply[1].Input, StringComparison.Ordinal);
        Assert.Equal("ip link set dev gre-sw mtu 1472 up", string.Join(' ', plan[1].Apply[2].Arguments));
    }

    [Fact]
    public void The_encapsulation_is_journaled_and_part_of_the_settings_and_an_older_journal_is_plain_GRE()
    {
        var udp = Old with { Encapsulation = Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp };
        var json = System.Text.Json.JsonSerializer.Serialize(MigrationJournal.From(udp, []), MigrationJsonContext.Default.MigrationJournal);
        var back = System.Text.Json.JsonSerializer.Deserialize(json, MigrationJsonContext.Default.MigrationJournal)!.ToSpec();

        Assert.Equal(Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp, back.Encapsulation);
        Assert.Equal(udp.Settings, back.Settings);
        Assert.NotEqual(Old.Settings, udp.Settings);
        Assert.EndsWith(" encapsulation=udp", udp.Settings, StringComparison.Ordinal);
        Assert.Equal(Switchover.Migration.Gre.TunnelEncapsulation.Gre, MigrationJournal.From(Old, []).ToSpec().Encapsulation);
        Assert.Null(MigrationJournal.From(Old, []).Encapsulation);
    }

    [Fact]
    public void The_new_host_refuses_a_kernel_ip6gre_link_whose_remote_end_is_a_moved_address_and_says_what_to_run_instead()
    {
        var oldV6 = IPAddress.Parse("2001:db8:2::1");
        var spec = Old with
        {
            Side = MigrationSide.New, LocalOuter = IPAddress.Parse("2001:db8:3::1"), RemoteOuter = oldV6, Mtu = 1452,
            Tuples = [SteeredTuple.Parse("tcp/[2001:db8:2::1]:25")],
        };

        var error = Assert.Single(MigrationPlanner.ValidateKernelTunnel(spec));
        Assert.Contains("drops every IPv6 packet whose source is the tunnel's remote end", error, StringComparison.Ordinal);
        Assert.Contains("switchover tunnel run --dataplane userspace --name gre-sw --local 2001:db8:3::1 --remote 2001:db8:2::1", error, StringComparison.Ordinal);

        // The old host's kernel link, an IPv4 outer (gre has no such check), and a tunnel end that is not moved are fine.
        Assert.Empty(MigrationPlanner.ValidateKernelTunnel(spec with { Side = MigrationSide.Old, LocalOuter = oldV6, RemoteOuter = IPAddress.Parse("2001:db8:3::1") }));
        Assert.Empty(MigrationPlanner.ValidateKernelTunnel(Old with { Side = MigrationSide.New, LocalOuter = IPAddress.Parse("203.0.113.1"), RemoteOuter = IPAddress.Parse("192.0.2.1") }));
        Assert.Empty(MigrationPlanner.ValidateKernelTunnel(spec with { RemoteOuter = IPAddress.Parse("2001:db8:2::2") }));
    }

    [Fact]
    public void The_kind_of_an_existing_tunnel_device_is_read_from_ip_link_details()
    {
        Assert.Equal("ip6gre", HostFacts.ParseLinkKind("""[{"ifname":"gre-sw","linkinfo":{"info_kind":"ip6gre","info_data":{"local":"2001:db8:3::1"}}}]"""));
        Assert.Equal("tun", HostFacts.ParseLinkKind("""[{"ifname":"gre-sw","linkinfo":{"info_kind":"tun"}}]"""));
        Assert.Null(HostFacts.ParseLinkKind("""[{"ifname":"eth0"}]"""));
    }

    [Fact]
    public void Bad_specs_list_every_problem()
    {
        var spec = Old with { RemoteOuter = IPAddress.Parse("192.0.2.1"), Key = null, Tuples = [SteeredTuple.Parse("tcp/192.0.2.9:25"), SteeredTuple.Parse("tcp/192.0.2.9:25")] };
        var errors = MigrationPlanner.ValidateOnHost(spec, Fresh, [SteeredTuple.Parse("udp/192.0.2.1:53")]);

        Assert.Contains(errors, e => e.Contains("to itself", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("key is missing", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Overlapping tuples", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("192.0.2.9 is not an address of this host", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("tcp/192.0.2.1:25")]
    [InlineData("udp/[2001:db8::1]:53")]
    public void Tuples_round_trip(string text) => Assert.Equal(text, SteeredTuple.Parse(text).ToString());

    [Theory]
    [InlineData("sctp/192.0.2.1:25")]
    [InlineData("tcp/192.0.2.1")]
    [InlineData("tcp/example.org:25")]
    [InlineData("tcp/192.0.2.1:0")]
    public void Bad_tuples_say_how_to_write_them(string text) => Assert.Throws<FormatException>(() => SteeredTuple.Parse(text));

    [Fact]
    public void A_new_migration_gets_the_first_mark_and_table_that_neither_another_migration_nor_the_host_uses()
    {
        var pick = Old with { Mark = MigrationSpec.PickFree, RouteTable = MigrationSpec.PickFree };
        Assert.Equal((0x2fu, 47), Pair(MigrationPlanner.PickFree(pick, Fresh, [])));

        var other = MigrationJournal.From(Old with { Name = NamespaceName.Parse("web"), TunnelDevice = "gre-web" }, []);
        Assert.Equal((0x30u, 48), Pair(MigrationPlanner.PickFree(pick, Fresh, [other])));

        // A rule of the host's own that uses mark 0x30 (here with a mask) and one that looks up table 49.
        var busy = Fresh with
        {
            Rules = [.. Fresh.Rules, new(false, 10, "main", new Dictionary<string, string> { ["fwmark"] = "0x30/0xff" }), new(true, 20, "49", new Dictionary<string, string>())],
        };
        Assert.Equal((0x32u, 50), Pair(MigrationPlanner.PickFree(pick, busy, [other])));

        // Given values are kept; only the missing one is picked.
        Assert.Equal((0x99u, 48), Pair(MigrationPlanner.PickFree(pick with { Mark = 0x99 }, Fresh, [other])));
    }

    [Fact]
    public void A_new_migration_that_shares_a_mark_table_device_or_link_network_with_another_or_the_host_is_refused_with_what_to_give_instead()
    {
        var other = MigrationJournal.From(Old with { Name = NamespaceName.Parse("web") }, []);
        var errors = MigrationPlanner.ValidateResources(Old, Fresh, [other]);

        Assert.Contains(errors, e => e.Contains("fwmark 0x2f is already used by migration 'web'", StringComparison.Ordinal) && e.Contains("--mark", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Routing table 47 is already used by migration 'web'", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Tunnel device gre-sw already belongs to migration 'web'", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Link network 169.254.43.0/30 is already used by migration 'web'", StringComparison.Ordinal));

        var distinct = Old with { Mark = 0x30, RouteTable = 48, TunnelDevice = "gre-2", LinkNetwork = IPAddress.Parse("169.254.200.0") };
        Assert.Empty(MigrationPlanner.ValidateResources(distinct, Fresh, [other]));

        var host = Fresh with
        {
            TunnelDeviceExists = false,
            LocalAddresses = [.. Fresh.LocalAddresses, IPAddress.Parse("169.254.200.1")],
            DefaultRoutes = [(false, "48", "eth1")],
        };
        var onHost = MigrationPlanner.ValidateResources(distinct, host, []);
        Assert.Contains(onHost, e => e.Contains("Routing table 48 is already used by a default route", StringComparison.Ordinal));
        Assert.Contains(onHost, e => e.Contains("link address 169.254.200.1 is already an address of this host", StringComparison.Ordinal));

        // A userspace tunnel's device exists before the setup: the address on another device is still taken, on the
        // tunnel device itself (a setup run again) it is not.
        var taken = (IPAddress.Parse("169.254.200.1"), "eth1");
        var onOther = Fresh with { LocalAddresses = [.. Fresh.LocalAddresses, taken.Item1], AddressDevices = [taken] };
        Assert.Contains(MigrationPlanner.ValidateResources(distinct, onOther, []),
            e => e.Contains("link address 169.254.200.1 is already an address of this host (on eth1)", StringComparison.Ordinal));
        var onTunnel = onOther with { AddressDevices = [(taken.Item1, "gre-2")] };
        Assert.Empty(MigrationPlanner.ValidateResources(distinct, onTunnel, []));
    }

    [Fact]
    public void The_link_network_comes_from_the_key_on_both_hosts_and_a_bad_one_is_refused()
    {
        var newSide = Old with { Side = MigrationSide.New };
        Assert.Equal("169.254.43.1/30", Old.LinkAddress);
        Assert.Equal("169.254.43.2/30", newSide.LinkAddress);
        Assert.NotEqual(MigrationSpec.LinkNetworkForKey(42), MigrationSpec.LinkNetworkForKey(43));
        Assert.Equal("169.254.10.6/30", (newSide with { LinkNetwork = IPAddress.Parse("169.254.10.4") }).LinkAddress);

        Assert.Contains((Old with { LinkNetwork = IPAddress.Parse("169.254.10.5") }).Validate(), e => e.Contains("first address of an IPv4 /30", StringComparison.Ordinal));
        Assert.Contains((Old with { LinkNetwork = IPAddress.Parse("2001:db8::") }).Validate(), e => e.Contains("first address of an IPv4 /30", StringComparison.Ordinal));
    }

    [Fact]
    public void A_journal_written_before_link_networks_were_per_migration_keeps_the_one_it_used()
    {
        var json = """
            {"version":1,"name":"mail","side":"Old","tunnelDevice":"gre-sw","localOuter":"192.0.2.1","remoteOuter":"203.0.113.1",
             "key":42,"mtu":1472,"mark":47,"routeTable":47,"tuples":["tcp/192.0.2.1:25"],"applied":[]}
            """;
        var journal = System.Text.Json.JsonSerializer.Deserialize(json, MigrationJsonContext.Default.MigrationJournal)!;
        Assert.Equal("169.254.47.1/30", journal.ToSpec().LinkAddress);
        Assert.Equal("169.254.43.0", MigrationJournal.From(Old, []).LinkNetwork);
    }

    [Fact]
    public void Flows_are_counted_as_tunnelled_only_when_their_mark_carries_the_migrations_beside_a_hosting_generations()
    {
        const string output = """
            tcp      6 431999 ESTABLISHED src=198.51.100.7 dst=192.0.2.1 sport=40000 dport=25 src=192.0.2.1 dst=198.51.100.7 sport=25 dport=40000 [ASSURED] mark=47 use=1
            tcp      6 431999 ESTABLISHED src=198.51.100.8 dst=192.0.2.1 sport=40001 dport=25 src=192.0.2.1 dst=198.51.100.8 sport=25 dport=40001 [ASSURED] mark=470 use=1
            tcp      6 431999 ESTABLISHED src=198.51.100.9 dst=192.0.2.1 sport=40002 dport=25 src=192.0.2.1 dst=198.51.100.9 sport=25 dport=40002 [ASSURED] mark=0 use=1
            tcp      6 431999 ESTABLISHED src=198.51.100.10 dst=192.0.2.1 sport=40003 dport=25 src=192.0.2.1 dst=198.51.100.10 sport=25 dport=40003 [ASSURED] mark=3145775 use=1
            tcp      6 431999 ESTABLISHED src=198.51.100.11 dst=192.0.2.1 sport=40004 dport=25 src=192.0.2.1 dst=198.51.100.11 sport=25 dport=40004 [ASSURED] mark=3145728 use=1
            """;
        // 3145775 is 0x0030002f: generation bits 0x00300000 of a Switchover app on this host, and the migration's 47.
        Assert.Equal((2, 3), MigrationStatusReader.CountMarked(output, 47));
    }

    private static (uint Mark, int Table) Pair(MigrationSpec spec) => (spec.Mark, spec.RouteTable);
}
