using System.Net;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

public sealed class KernelGreDataplaneTests
{
    private static readonly TunnelOptions V4 = new()
    {
        Name = "gre0",
        Local = IPAddress.Parse("192.0.2.1"),
        Remote = IPAddress.Parse("203.0.113.1"),
        Key = 42,
    };

    private static readonly TunnelOptions V6 = V4 with { Local = IPAddress.Parse("2001:db8::1"), Remote = IPAddress.Parse("2001:db8::2") };

    [Fact(Timeout = 10_000)]
    public async Task IPv4_outer_creates_a_gre_link_with_key_and_ttl_then_sets_the_MTU_and_brings_it_up()
    {
        var runner = new RecordingRunner();
        await using (var dataplane = new KernelGreDataplane(V4, runner))
        {
            await dataplane.StartAsync(CancellationToken.None);
            Assert.Equal(
            [
                "ip link add gre0 type gre local 192.0.2.1 remote 203.0.113.1 ttl 64 key 42",
                "nft -f -",
                "ip link set dev gre0 mtu 1472 up",
            ], runner.Lines);
            Assert.Contains("ip daddr 192.0.2.1 meta l4proto 47 ip saddr != 203.0.113.1 counter name \"stray\" drop", runner.Commands[1].StandardInput, StringComparison.Ordinal);
        }

        Assert.Equal(["nft -f -", "ip link del dev gre0"], runner.Lines.TakeLast(2));
        Assert.Contains("delete table inet switchover_gre_gre0", runner.Commands[^2].StandardInput, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task IPv6_outer_creates_an_ip6gre_link_without_the_encapsulation_limit_so_the_MTU_matches_userspace_and_that_may_send_to_a_local_remote()
    {
        var runner = new RecordingRunner();
        await using var dataplane = new KernelGreDataplane(V6, runner);
        await dataplane.StartAsync(CancellationToken.None);
        Assert.Equal(
        [
            "ip link add gre0 type ip6gre local 2001:db8::1 remote 2001:db8::2 ttl 64 key 42 encaplimit none allow-localremote",
            "nft -f -",
            "ip link set dev gre0 mtu 1452 up",
        ], runner.Lines);
        Assert.Contains("ip6 daddr 2001:db8::1 meta l4proto 47 ip6 saddr != 2001:db8::2", runner.Commands[1].StandardInput, StringComparison.Ordinal);
    }

    [Fact]
    public void Mark_checksum_sequence_numbers_ttl_MTU_and_namespace_reach_the_command_line()
    {
        var options = V4 with
        {
            Key = null,
            FirewallMark = 0x1f,
            SendChecksum = true,
            SendSequenceNumbers = true,
            Ttl = 32,
            Mtu = 1400,
            NetworkNamespace = "so-old",
        };
        Assert.Equal("ip -n so-old link add gre0 type gre local 192.0.2.1 remote 203.0.113.1 ttl 32 ocsum oseq fwmark 0x1f",
            KernelGreDataplane.AddCommand(options).ToString());
        Assert.Equal("ip -n so-old link set dev gre0 mtu 1400 up", KernelGreDataplane.UpCommand(options).ToString());
        Assert.Equal("ip -n so-old link del dev gre0", KernelGreDataplane.DeleteCommand(options).ToString());
        Assert.Equal("ip netns exec so-old nft -f -", KernelGreDataplane.FilterCommand(options).ToString());
        Assert.Equal("ip netns exec so-old nft -f -", KernelGreDataplane.FilterDeleteCommand(options).ToString());
    }

    [Fact(Timeout = 10_000)]
    public async Task A_kernel_without_gre_is_reported_with_the_way_out()
    {
        var runner = new RecordingRunner { Answer = _ => RecordingRunner.Fail("Error: Unknown device type.") };
        await using var dataplane = new KernelGreDataplane(V4, runner);
        var error = await Assert.ThrowsAsync<TunnelException>(() => dataplane.StartAsync(CancellationToken.None));
        Assert.Contains("no gre support", error.Message, StringComparison.Ordinal);
        Assert.Contains("use the userspace dataplane", error.Message, StringComparison.Ordinal);
        Assert.Single(runner.Commands);
    }

    [Fact(Timeout = 10_000)]
    public async Task When_bringing_the_link_up_fails_the_link_is_deleted_again()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.Arguments.Contains("set") ? RecordingRunner.Fail("Error: mtu greater than device maximum.") : RecordingRunner.Ok(),
        };
        await using var dataplane = new KernelGreDataplane(V4, runner);
        var error = await Assert.ThrowsAsync<TunnelException>(() => dataplane.StartAsync(CancellationToken.None));
        Assert.Contains("deleted again", error.Message, StringComparison.Ordinal);
        Assert.Equal("ip link del dev gre0", runner.Lines.Last());
    }

    [Fact(Timeout = 10_000)]
    public async Task When_the_peer_filter_cannot_be_loaded_the_link_is_deleted_again_and_the_error_says_why()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.FileName == "nft" && c.StandardInput!.Contains("flush table", StringComparison.Ordinal)
                ? RecordingRunner.Fail("Error: Could not process rule: No such file or directory", 1)
                : RecordingRunner.Ok(),
        };
        await using var dataplane = new KernelGreDataplane(V4, runner);
        var error = await Assert.ThrowsAsync<TunnelException>(() => dataplane.StartAsync(CancellationToken.None));
        Assert.Contains("switchover_gre_gre0", error.Message, StringComparison.Ordinal);
        Assert.Contains("deleted again", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(runner.Lines, l => l.Contains("up", StringComparison.Ordinal));
        Assert.Equal("ip link del dev gre0", runner.Lines.Last());
    }

    [Fact(Timeout = 10_000)]
    public async Task Counters_come_from_the_links_stats64()
    {
        const string json = """
            [{"ifindex":5,"ifname":"gre0","stats64":{"rx":{"bytes":1000,"packets":10,"errors":1,"dropped":2,"over_errors":0,"multicast":0},
              "tx":{"bytes":2000,"packets":20,"errors":3,"dropped":4,"carrier_errors":0,"collisions":0}}}]
            """;
        var runner = new RecordingRunner { Answer = c => RecordingRunner.Ok(c.Arguments.Contains("-j") ? json : "") };
        await using var dataplane = new KernelGreDataplane(V4, runner);
        await dataplane.StartAsync(CancellationToken.None);
        var counters = await dataplane.GetCountersAsync(CancellationToken.None);
        Assert.Equal("ip -s -j link show dev gre0", runner.Lines.Last());
        Assert.Equal(new TunnelCounters { RxPackets = 10, RxBytes = 1000, RxErrors = 3, TxPackets = 20, TxBytes = 2000, TxErrors = 3, TxDropped = 4 }, counters);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_link_already_gone_at_dispose_is_not_an_error_and_dispose_completes_the_dataplane()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.Arguments.Contains("del") ? RecordingRunner.Fail("Cannot find device \"gre0\"", 1) : RecordingRunner.Ok(),
        };
        var dataplane = new KernelGreDataplane(V4, runner);
        await dataplane.StartAsync(CancellationToken.None);
        Assert.False(dataplane.Completion.IsCompleted);
        await dataplane.DisposeAsync();
        await dataplane.Completion;
        Assert.Equal(GreDataplaneKind.Kernel, dataplane.Kind);
    }

    [Fact(Timeout = 10_000)]
    public async Task GRE_in_UDP_opens_the_FOU_port_before_a_link_with_fou_encapsulation_filters_udp_4754_and_closes_the_port_after_the_link()
    {
        var runner = new RecordingRunner();
        await using (var dataplane = new KernelGreDataplane(V4 with { Encapsulation = TunnelEncapsulation.GreInUdp }, runner))
        {
            await dataplane.StartAsync(CancellationToken.None);
            Assert.Equal(
            [
                "modprobe -a fou",
                "ip fou add port 4754 ipproto 47",
                "ip link add gre0 type gre local 192.0.2.1 remote 203.0.113.1 ttl 64 key 42 encap fou encap-sport 4754 encap-dport 4754",
                "nft -f -",
                "ip link set dev gre0 mtu 1464 up",
            ], runner.Lines);
            Assert.Contains("ip daddr 192.0.2.1 udp dport 4754 ip saddr != 203.0.113.1 counter name \"stray\" drop", runner.Commands[3].StandardInput, StringComparison.Ordinal);
            Assert.DoesNotContain("l4proto 47", runner.Commands[3].StandardInput, StringComparison.Ordinal);
        }

        Assert.Equal(["nft -f -", "ip link del dev gre0", "ip fou del port 4754"], runner.Lines.TakeLast(3));
    }

    [Fact(Timeout = 10_000)]
    public async Task GRE_in_UDP_over_IPv6_uses_the_IPv6_FOU_port()
    {
        var runner = new RecordingRunner();
        await using (var dataplane = new KernelGreDataplane(V6 with { Encapsulation = TunnelEncapsulation.GreInUdp }, runner))
        {
            await dataplane.StartAsync(CancellationToken.None);
            // ip6gre's `encap fou` needs fou6 as well, which nothing else loads.
            Assert.Equal(["modprobe -a fou fou6", "ip fou add port 4754 ipproto 47 -6"], runner.Lines.Take(2));
            Assert.Equal("ip link add gre0 type ip6gre local 2001:db8::1 remote 2001:db8::2 ttl 64 key 42 encap fou encap-sport 4754 encap-dport 4754 " +
                "encaplimit none allow-localremote", runner.Lines.ElementAt(2));
            Assert.Contains("ip6 daddr 2001:db8::1 udp dport 4754 ip6 saddr != 2001:db8::2", runner.Commands[3].StandardInput, StringComparison.Ordinal);
        }

        Assert.Equal("ip fou del port 4754 -6", runner.Lines.Last());
    }

    [Fact(Timeout = 10_000)]
    public async Task A_kernel_without_fou_is_reported_with_the_way_out_and_nothing_is_left()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.FileName == "modprobe" ? RecordingRunner.Fail("modprobe: FATAL: Module fou not found in directory /lib/modules/6.18.0", 1)
                : c.Arguments[0] == "fou" ? RecordingRunner.Fail("Error: Generic Netlink family not found.") : RecordingRunner.Ok(),
        };
        await using var dataplane = new KernelGreDataplane(V4 with { Encapsulation = TunnelEncapsulation.GreInUdp }, runner);
        var error = await Assert.ThrowsAsync<TunnelException>(() => dataplane.StartAsync(CancellationToken.None));
        Assert.Contains("modprobe fou", error.Message, StringComparison.Ordinal);
        Assert.Contains("'modprobe -a fou' failed: modprobe: FATAL: Module fou not found", error.Message, StringComparison.Ordinal);
        Assert.Contains("userspace dataplane", error.Message, StringComparison.Ordinal);
        Assert.Equal(["modprobe -a fou", "ip fou add port 4754 ipproto 47"], runner.Lines);
    }

    [Fact(Timeout = 10_000)]
    public async Task When_the_fou_link_cannot_be_created_the_FOU_port_is_closed_again()
    {
        var runner = new RecordingRunner
        {
            Answer = c => c.Arguments.Contains("link") && c.Arguments.Contains("add") ? RecordingRunner.Fail("Error: argument \"encap\" is wrong") : RecordingRunner.Ok(),
        };
        await using var dataplane = new KernelGreDataplane(V4 with { Encapsulation = TunnelEncapsulation.GreInUdp }, runner);
        var error = await Assert.ThrowsAsync<TunnelException>(() => dataplane.StartAsync(CancellationToken.None));
        Assert.Contains("modprobe fou", error.Message, StringComparison.Ordinal);
        Assert.Equal("ip fou del port 4754", runner.Lines.Last());
    }

    [Fact(Timeout = 10_000)]
    public async Task A_FOU_port_another_link_opened_is_used_and_left_open()
    {
        var runner = new RecordingRunner { Answer = c => c.Arguments[0] == "fou" ? RecordingRunner.Fail("Error: fou add failed: File exists") : RecordingRunner.Ok() };
        await using (var dataplane = new KernelGreDataplane(V4 with { Encapsulation = TunnelEncapsulation.GreInUdp }, runner))
        {
            await dataplane.StartAsync(CancellationToken.None);
        }

        Assert.Equal("ip link del dev gre0", runner.Lines.Last());
        Assert.Single(runner.Lines, l => l.StartsWith("ip fou", StringComparison.Ordinal));
    }
}
