using System.Net;
using Switchover.Netfilter;

namespace Switchover.Tests;

public sealed class GrePeerFilterTests
{
    [Fact]
    public void An_IPv4_link_drops_and_counts_GRE_to_its_local_address_from_anyone_but_the_peer()
    {
        var text = new GrePeerFilter("gre-sw", IPAddress.Parse("192.0.2.1"), IPAddress.Parse("203.0.113.1")).Render();

        Assert.Equal(
            """
            table inet switchover_gre_gre-sw {
            }
            flush table inet switchover_gre_gre-sw
            table inet switchover_gre_gre-sw {
            	counter stray {
            	}
            	chain prerouting {
            		type filter hook prerouting priority -300; policy accept;
            		ip daddr 192.0.2.1 meta l4proto 47 ip saddr != 203.0.113.1 counter name "stray" drop
            	}
            }

            """.ReplaceLineEndings("\n"),
            text);
    }

    [Fact]
    public void An_IPv6_link_matches_the_IPv6_header_and_protocol_47_after_any_extension_header()
    {
        var filter = new GrePeerFilter("gre-sw", IPAddress.Parse("2001:db8:2::1"), IPAddress.Parse("2001:db8:3::1"));

        Assert.Contains("\t\tip6 daddr 2001:db8:2::1 meta l4proto 47 ip6 saddr != 2001:db8:3::1 counter name \"stray\" drop\n", filter.Render(), StringComparison.Ordinal);
        Assert.Equal("table inet switchover_gre_gre-sw {\n}\ndelete table inet switchover_gre_gre-sw\n", filter.RenderDelete());
    }

    [Fact]
    public void Mixed_families_and_a_device_name_that_could_escape_the_table_name_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new GrePeerFilter("gre-sw", IPAddress.Parse("192.0.2.1"), IPAddress.Parse("2001:db8::1")).Render());
        Assert.Throws<ArgumentException>(() => new GrePeerFilter("gre sw; flush ruleset", IPAddress.Parse("192.0.2.1"), IPAddress.Parse("203.0.113.1")).Render());
    }
}
