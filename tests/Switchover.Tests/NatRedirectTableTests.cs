using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

public sealed class NatRedirectTableTests
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");

    [Fact]
    public void The_table_redirects_public_ports_to_the_active_generation_and_guards_every_live_private_port()
    {
        var state = NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, (8080, 40001)))
            .With(Generation(2, GenerationState.Active, (8080, 40002), (8443, 40003)))
            .With(Generation(3, GenerationState.Starting, (8080, 40004)));

        var text = NatRedirectTable.FromState(Echo, state).Render();

        Assert.Equal(
            """
            table inet switchover_echo {
            }
            flush table inet switchover_echo
            table inet switchover_echo {
            	chain prerouting {
            		type nat hook prerouting priority -100; policy accept;
            		fib daddr type local tcp dport 8080 redirect to :40002 comment "gen=2 pid=1002"
            		fib daddr type local tcp dport 8443 redirect to :40003 comment "gen=2 pid=1002"
            	}
            	chain output {
            		type nat hook output priority -100; policy accept;
            		fib daddr type local tcp dport 8080 redirect to :40002 comment "gen=2 pid=1002"
            		fib daddr type local tcp dport 8443 redirect to :40003 comment "gen=2 pid=1002"
            	}
            	chain input {
            		type filter hook input priority 0; policy accept;
            		tcp dport { 40001, 40002, 40003, 40004 } ct status dnat accept
            		iif "lo" tcp dport { 40001, 40002, 40003, 40004 } accept
            		tcp dport { 40001, 40002, 40003, 40004 } drop
            	}
            }

            """.ReplaceLineEndings("\n"),
            text);
    }

    [Fact]
    public void Without_an_active_generation_nothing_is_redirected_but_ports_stay_guarded()
    {
        var state = NamespaceState.Empty(Echo).With(Generation(5, GenerationState.Starting, (8080, 40010)));
        var text = NatRedirectTable.FromState(Echo, state).Render();
        Assert.DoesNotContain("redirect", text, StringComparison.Ordinal);
        Assert.Contains("tcp dport { 40010 } drop", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_statement_names_only_our_own_table()
    {
        var state = NamespaceState.Empty(Echo).With(Generation(1, GenerationState.Active, (8080, 40001)));
        var lines = NatRedirectTable.FromState(Echo, state).Render().Split('\n')
            .Concat(NatRedirectTable.RenderDelete(Echo).Split('\n'))
            .Where(l => l.StartsWith("table", StringComparison.Ordinal) || l.StartsWith("flush", StringComparison.Ordinal) || l.StartsWith("delete", StringComparison.Ordinal));
        Assert.All(lines, l => Assert.Contains("inet switchover_echo", l, StringComparison.Ordinal));
        Assert.DoesNotContain("ruleset", NatRedirectTable.RenderDelete(Echo), StringComparison.Ordinal);
    }

    [Fact]
    public void Deleting_declares_the_table_first_so_that_it_is_idempotent() =>
        Assert.Equal("table inet switchover_echo {\n}\ndelete table inet switchover_echo\n", NatRedirectTable.RenderDelete(Echo));

    [Fact]
    public void A_port_out_of_range_renders_nothing()
    {
        var table = new NatRedirectTable(Echo, [new NatRedirect(70000, 40001, 1, 1)], [40001]);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Render());
    }

    internal static GenerationRecord Generation(long id, GenerationState state, params (int Public, int Private)[] ports) =>
        new(id, 1000 + (int)id, 42, state, DateTimeOffset.UnixEpoch, ports.Select(p => new PortMapping(p.Public, p.Private)).ToList());
}
