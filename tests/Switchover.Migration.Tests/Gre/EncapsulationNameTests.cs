using System.Net;
using System.Text.Json;
using Switchover.Migration.Gre;
using Switchover.Migration.Model;
using Switchover.Migration.Plan;
using Switchover.Netfilter;

namespace Switchover.Migration.Tests.Gre;

/// <summary>Operators see one name per encapsulation, as on the command line (gre, udp): in the agent's JSON and the journal too.</summary>
public sealed class EncapsulationNameTests
{
    private static readonly MigrationSpec Spec = new(NamespaceName.Parse("mail"), MigrationSide.Old, "gre-sw", IPAddress.Parse("192.0.2.1"),
        IPAddress.Parse("203.0.113.1"), 42, 1464, 0x2f, 47, [SteeredTuple.Parse("tcp/192.0.2.1:25")]) { Encapsulation = TunnelEncapsulation.GreInUdp };

    [Theory]
    [InlineData(TunnelEncapsulation.Gre, "gre")]
    [InlineData(TunnelEncapsulation.GreInUdp, "udp")]
    public void The_tunnel_agents_status_names_the_encapsulation_as_the_command_line_does(TunnelEncapsulation encapsulation, string name)
    {
        var status = new TunnelAgentStatus(1, 0, [new TunnelStatus("gre0", GreDataplaneKind.Userspace, "192.0.2.1", "203.0.113.1", 42, 1464, null, null,
            "running", new TunnelCounters(), encapsulation)]);
        var json = TunnelAgentProtocol.Serialize(status);

        using var document = JsonDocument.Parse(json);
        Assert.Equal(name, document.RootElement.GetProperty("tunnels")[0].GetProperty("encapsulation").GetString());
        Assert.Equal(name, MigrationSpec.EncapsulationName(encapsulation));
        var back = TunnelAgentProtocol.ParseResponse(TunnelAgentProtocol.Response(new AgentResponse(true, Status: status)))!;
        Assert.Equal(encapsulation, back.Status!.Tunnels[0].Encapsulation);
    }

    [Fact]
    public void An_agent_from_before_the_one_vocabulary_that_says_greInUdp_is_still_understood()
    {
        var line = """
            {"ok":true,"status":{"pid":1,"uid":0,"tunnels":[{"name":"gre0","dataplane":"userspace","local":"192.0.2.1","remote":"203.0.113.1","key":42,"mtu":1464,"state":"running","counters":{},"encapsulation":"greInUdp"}]}}
            """;
        Assert.Equal(TunnelEncapsulation.GreInUdp, TunnelAgentProtocol.ParseResponse(line)!.Status!.Tunnels[0].Encapsulation);
    }

    [Fact]
    public void The_journal_says_udp_and_journals_written_with_the_enum_name_or_none_still_read()
    {
        var json = JsonSerializer.Serialize(MigrationJournal.From(Spec, []), MigrationJsonContext.Default.MigrationJournal);
        Assert.Contains("\"encapsulation\": \"udp\"", json, StringComparison.Ordinal);

        foreach (var older in new[] { "\"GreInUdp\"", "\"greInUdp\"", "1" })
        {
            var journal = JsonSerializer.Deserialize(json.Replace("\"udp\"", older, StringComparison.Ordinal), MigrationJsonContext.Default.MigrationJournal)!;
            Assert.True(journal.ToSpec().Encapsulation == TunnelEncapsulation.GreInUdp, $"A journal with encapsulation {older} did not read as GRE in UDP.");
        }

        var plain = JsonSerializer.Serialize(MigrationJournal.From(Spec with { Encapsulation = TunnelEncapsulation.Gre }, []), MigrationJsonContext.Default.MigrationJournal);
        Assert.Contains("\"encapsulation\": null", plain, StringComparison.Ordinal);
        Assert.Equal(TunnelEncapsulation.Gre, JsonSerializer.Deserialize(plain, MigrationJsonContext.Default.MigrationJournal)!.ToSpec().Encapsulation);
    }

    [Fact]
    public void An_unknown_name_is_refused_saying_which_names_there_are()
    {
        var e = Assert.Throws<JsonException>(() => JsonSerializer.Deserialize("\"ipip\"", TunnelAgentJson.Default.TunnelAgentStatus.Options.GetTypeInfo(typeof(TunnelEncapsulation))));
        Assert.Contains("Encapsulation 'ipip' is not known: gre or udp.", e.Message, StringComparison.Ordinal);
    }
}
