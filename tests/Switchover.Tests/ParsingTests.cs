using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

public sealed class ParsingTests
{
    [Fact]
    public void Conntrack_output_is_counted_by_tcp_state()
    {
        const string output = """
            tcp      6 431999 ESTABLISHED src=192.0.2.2 dst=192.0.2.1 sport=50000 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=40001 dport=50000 [ASSURED] mark=0 use=1
            tcp      6 119 SYN_SENT src=192.0.2.2 dst=192.0.2.1 sport=50001 dport=8080 [UNREPLIED] src=192.0.2.1 dst=192.0.2.2 sport=40001 dport=50001 mark=0 use=1
            tcp      6 59 SYN_RECV src=192.0.2.2 dst=192.0.2.1 sport=50002 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=40001 dport=50002 mark=0 use=1
            tcp      6 119 TIME_WAIT src=192.0.2.2 dst=192.0.2.1 sport=50003 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=40001 dport=50003 [ASSURED] mark=0 use=1
            """;
        Assert.Equal(new FlowCounts(1, 2, 1), ConntrackProgramSource.Parse(output));
        Assert.Equal(new FlowCounts(0, 0, 0), ConntrackProgramSource.Parse(string.Empty));
    }

    [Fact]
    public void The_start_time_is_found_even_when_the_command_name_has_spaces_and_parentheses()
    {
        const string stat = "1234 (my ) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 4 0 987654 1000000 200 18446744073709551615";
        Assert.Equal(987654UL, ProcessIdentity.ParseStartTime(stat));
    }

    [Fact]
    public void This_process_is_alive_and_a_wrong_start_time_is_not()
    {
        var self = ProcessIdentity.Current;
        Assert.True(self.IsAlive());
        Assert.False((self with { StartTime = self.StartTime + 1 }).IsAlive());
    }
}
