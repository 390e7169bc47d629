using System.Net;
using Switchover.Netfilter;

namespace Switchover.Tests;

public sealed class SteeringTableTests
{
    private static readonly SteeredTuple Smtp = SteeredTuple.Parse("tcp/192.0.2.1:25");
    private static readonly SteeredTuple Dns6 = SteeredTuple.Parse("udp/[2001:db8::1]:53");

    [Fact]
    public void The_old_host_marks_new_flows_of_moved_tuples_and_everything_the_tunnel_brings()
    {
        var text = new SteeringTable("mail", OldSide: true, "gre-sw", 0x2f, [Smtp, Dns6], []).Render();

        Assert.Equal(
            """
            table inet switchover_mig_mail {
            }
            flush table inet switchover_mig_mail
            table inet switchover_mig_mail {
            	set tuples4 {
            		type ipv4_addr . inet_proto . inet_service
            		elements = { 192.0.2.1 . tcp . 25 }
            	}
            	set tuples6 {
            		type ipv6_addr . inet_proto . inet_service
            		elements = { 2001:db8::1 . udp . 53 }
            	}
            	chain prerouting {
            		type filter hook prerouting priority -150; policy accept;
            		iifname "gre-sw" ct mark set ct mark & 0x00ff0000 | 0x2f return
            		ip daddr . meta l4proto . th dport @tuples4 ct state new ct mark set ct mark & 0x00ff0000 | 0x2f
            		ip6 daddr . meta l4proto . th dport @tuples6 ct state new ct mark set ct mark & 0x00ff0000 | 0x2f
            		ct mark & 0xff00ffff == 0x2f meta mark set 0x2f
            	}
            	chain mss {
            		type filter hook forward priority mangle; policy accept;
            		oifname "gre-sw" tcp flags syn tcp option maxseg size set rt mtu
            		iifname "gre-sw" tcp flags syn tcp option maxseg size set rt mtu
            	}
            }

            """.ReplaceLineEndings("\n"),
            text);
    }

    [Theory]
    [InlineData(0x2fu, true)]
    [InlineData(0xff00ffffu, true)]
    [InlineData(0u, false)]
    [InlineData(0x00010000u, false)]
    [InlineData(0x0030002fu, false)]
    public void A_migrations_mark_stays_out_of_the_bits_of_the_hosting_generations(uint mark, bool fits) =>
        Assert.Equal(fits, SteeringTable.FitsConnectionMark(mark));

    [Fact]
    public void A_flow_that_a_hosting_generation_also_marked_still_carries_the_migrations_mark()
    {
        Assert.True(SteeringTable.CarriesMark(0x0030002f, 0x2f));
        Assert.True(SteeringTable.CarriesMark(0x2f, 0x2f));
        Assert.False(SteeringTable.CarriesMark(0x0030012f, 0x2f));
        Assert.False(SteeringTable.CarriesMark(0x00300000, 0x2f));
    }

    [Fact]
    public void The_new_host_counts_direct_arrivals_and_sends_replies_of_tunnelled_flows_back_through_the_tunnel()
    {
        var text = new SteeringTable("mail", OldSide: false, "gre-sw", 0x2f, [Smtp], [IPAddress.Parse("192.0.2.1")]).Render();

        Assert.Contains("iifname \"gre-sw\" ct mark set ct mark & 0x00ff0000 | 0x2f\n", text, StringComparison.Ordinal);
        Assert.Contains("type route hook output priority mangle; policy accept;\n\t\tct mark & 0xff00ffff == 0x2f meta mark set 0x2f", text, StringComparison.Ordinal);
        Assert.Contains("iifname != { \"gre-sw\", \"lo\" } ip daddr @moved4 counter name \"direct\"", text, StringComparison.Ordinal);
        Assert.Contains("iifname \"gre-sw\" ip daddr @moved4 counter name \"tunnelled\"", text, StringComparison.Ordinal);
        Assert.Contains("elements = { 192.0.2.1 }", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Moving_and_returning_a_tuple_is_one_set_element_and_never_touches_a_chain()
    {
        var table = new SteeringTable("mail", OldSide: true, "gre-sw", 0x2f, [], []);
        Assert.Equal("add element inet switchover_mig_mail tuples6 { 2001:db8::1 . udp . 53 }\n", table.RenderMove(Dns6));
        Assert.Equal("delete element inet switchover_mig_mail tuples4 { 192.0.2.1 . tcp . 25 }\n", table.RenderReturn(Smtp));
    }

    [Fact]
    public void A_device_name_that_could_escape_its_quotes_is_rejected() =>
        Assert.Throws<ArgumentException>(() => new SteeringTable("mail", OldSide: true, "gre\"; flush ruleset", 0x2f, [], []).Render());
}
