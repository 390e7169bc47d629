using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

public sealed class HandoffTableTests
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");

    [Fact]
    public void Tproxy_steers_new_connections_to_the_active_generation_and_guards_every_live_private_port()
    {
        var state = NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, (8080, 40001)))
            .With(Generation(2, GenerationState.Active, (8080, 40002), (8443, 40003)))
            .With(Generation(3, GenerationState.Starting, (8080, 40004)));

        var text = HandoffTable.FromState(Echo, state).Render();

        Assert.Equal(
            """
            table inet switchover_echo {
            }
            flush table inet switchover_echo
            table inet switchover_echo {
            	chain prerouting {
            		type filter hook prerouting priority filter + 20; policy accept;
            		tcp flags & (fin | syn | rst | ack) != syn return
            		iif != "lo" tcp dport { 40001, 40002, 40003, 40004 } drop
            		tcp dport 8080 fib daddr type local tproxy to :40002 ct mark set ct mark & 0xff00ffff | 0x00030000 accept comment "gen=2 pid=1002"
            		tcp dport 8443 fib daddr type local tproxy to :40003 ct mark set ct mark & 0xff00ffff | 0x00030000 accept comment "gen=2 pid=1002"
            	}
            }

            """.ReplaceLineEndings("\n"),
            text);
    }

    [Fact]
    public void An_endpoint_bound_to_one_address_or_family_steers_only_that_address_or_family()
    {
        var state = NamespaceState.Empty(Echo).With(Generation(4, GenerationState.Active,
            new PortMapping(5000, 40001, "127.0.0.1"), new PortMapping(5000, 40002, "::1"), new PortMapping(8080, 40003, "0.0.0.0")));

        var lines = HandoffTable.FromState(Echo, state).Render().Split('\n').Where(l => l.Contains("tproxy", StringComparison.Ordinal)).ToList();

        Assert.Equal(
            [
                "\t\tip daddr 127.0.0.1 tcp dport 5000 tproxy ip to :40001 ct mark set ct mark & 0xff00ffff | 0x00050000 accept comment \"gen=4 pid=1004\"",
                "\t\tip6 daddr ::1 tcp dport 5000 tproxy ip6 to :40002 ct mark set ct mark & 0xff00ffff | 0x00050000 accept comment \"gen=4 pid=1004\"",
                "\t\tmeta nfproto ipv4 tcp dport 8080 fib daddr type local tproxy ip to :40003 ct mark set ct mark & 0xff00ffff | 0x00050000 accept comment \"gen=4 pid=1004\"",
            ],
            lines);
    }

    [Fact]
    public void Redirect_steering_keeps_the_nat_chains_and_the_same_guard()
    {
        var state = NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, (8080, 40001)))
            .With(Generation(2, GenerationState.Active, Steering.Redirect, (8080, 40002)));

        var text = HandoffTable.FromState(Echo, state).Render();

        Assert.Equal(
            """
            table inet switchover_echo {
            }
            flush table inet switchover_echo
            table inet switchover_echo {
            	chain prerouting {
            		type filter hook prerouting priority filter + 20; policy accept;
            		tcp flags & (fin | syn | rst | ack) != syn return
            		iif != "lo" tcp dport { 40001, 40002 } ct status dnat accept
            		iif != "lo" tcp dport { 40001, 40002 } drop
            	}
            	chain nat_prerouting {
            		type nat hook prerouting priority -100; policy accept;
            		tcp dport 8080 fib daddr type local redirect to :40002 comment "gen=2 pid=1002"
            	}
            	chain nat_output {
            		type nat hook output priority -100; policy accept;
            		tcp dport 8080 fib daddr type local redirect to :40002 comment "gen=2 pid=1002"
            	}
            }

            """.ReplaceLineEndings("\n"),
            text);
    }

    [Fact]
    public void The_nat_chains_stay_while_a_redirected_generation_drains_under_a_tproxy_one()
    {
        var state = NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, Steering.Redirect, (8080, 40001)))
            .With(Generation(2, GenerationState.Active, (8080, 40002)));

        var text = HandoffTable.FromState(Echo, state).Render();

        Assert.Contains("tproxy to :40002", text, StringComparison.Ordinal);
        Assert.Contains("chain nat_prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t}", text, StringComparison.Ordinal);
        Assert.DoesNotContain("redirect", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_an_active_generation_nothing_is_steered_but_ports_stay_guarded()
    {
        var state = NamespaceState.Empty(Echo).With(Generation(5, GenerationState.Starting, (8080, 40010)));
        var text = HandoffTable.FromState(Echo, state).Render();
        Assert.DoesNotContain("tproxy", text, StringComparison.Ordinal);
        Assert.DoesNotContain("redirect", text, StringComparison.Ordinal);
        Assert.Contains("iif != \"lo\" tcp dport { 40010 } drop", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Generation_marks_stay_inside_the_mask_and_are_never_zero()
    {
        foreach (var id in new long[] { 1, 254, 255, 256, 510, long.MaxValue })
        {
            var mark = HandoffTable.CtMarkOf(id);
            Assert.Equal(mark, mark & HandoffTable.CtMarkMask);
            Assert.NotEqual(0u, mark);
        }
    }

    [Fact]
    public void Every_statement_names_only_our_own_table()
    {
        var state = NamespaceState.Empty(Echo).With(Generation(1, GenerationState.Active, (8080, 40001)));
        var lines = HandoffTable.FromState(Echo, state).Render().Split('\n')
            .Concat(HandoffTable.RenderDelete(Echo).Split('\n'))
            .Where(l => l.StartsWith("table", StringComparison.Ordinal) || l.StartsWith("flush", StringComparison.Ordinal) || l.StartsWith("delete", StringComparison.Ordinal));
        Assert.All(lines, l => Assert.Contains("inet switchover_echo", l, StringComparison.Ordinal));
        Assert.DoesNotContain("ruleset", HandoffTable.RenderDelete(Echo), StringComparison.Ordinal);
    }

    [Fact]
    public void Deleting_declares_the_table_first_so_that_it_is_idempotent() =>
        Assert.Equal("table inet switchover_echo {\n}\ndelete table inet switchover_echo\n", HandoffTable.RenderDelete(Echo));

    [Fact]
    public void A_port_out_of_range_renders_nothing()
    {
        var table = new HandoffTable(Echo, Steering.Tproxy, [new PortSteer(new PortMapping(70000, 40001), 1, 1)], [40001], NatChains: false);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Render());
    }

    internal static GenerationRecord Generation(long id, GenerationState state, params (int Public, int Private)[] ports) =>
        Generation(id, state, Steering.Tproxy, ports);

    internal static GenerationRecord Generation(long id, GenerationState state, Steering steering, params (int Public, int Private)[] ports) =>
        new(id, 1000 + (int)id, 42, state, DateTimeOffset.UnixEpoch, ports.Select(p => new PortMapping(p.Public, p.Private)).ToList(), steering);

    private static GenerationRecord Generation(long id, GenerationState state, params PortMapping[] ports) =>
        new(id, 1000 + (int)id, 42, state, DateTimeOffset.UnixEpoch, ports, Steering.Tproxy);
}
