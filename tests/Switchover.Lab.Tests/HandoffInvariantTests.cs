using Switchover.State;

namespace Switchover.Lab.Tests;

/// <summary>The invariant checker's pure part, on a table as nft 1.0.6 lists it in JSON (no root needed).</summary>
public sealed class HandoffInvariantTests
{
    // nft -j list table of one active generation (2, pid 123, private port 40002) and one draining (1, port 40001).
    private const string Table = """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "switchover_x", "handle": 1}},
        {"chain": {"family": "inet", "table": "switchover_x", "name": "prerouting", "handle": 1, "type": "filter", "hook": "prerouting", "prio": 20, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "switchover_x", "chain": "prerouting", "handle": 6, "expr": [{"match": {"op": "!=", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [40001, 40002]}}}, {"drop": null}]}},
        {"rule": {"family": "inet", "table": "switchover_x", "chain": "prerouting", "handle": 7, "comment": "gen=2 pid=123", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}}, {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"tproxy": {"port": 40002}}, {"accept": null}]}}]}
        """;

    private static NamespaceState State(GenerationState second = GenerationState.Active) => NamespaceState.Empty(NamespaceName.Parse("x"))
        .With(new GenerationRecord(1, 122, 7, GenerationState.Draining, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40001)]))
        .With(new GenerationRecord(2, 123, 7, second, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40002)]));

    private static readonly ListeningSocket[] Listening = [new(40001, [122]), new(40002, [123])];

    [Fact]
    public void Steers_and_guard_are_read_from_the_kernels_json()
    {
        var (steers, guarded) = HandoffInvariant.ParseTable(Table);

        Assert.Equal([new SteerRule("prerouting", "tproxy", 8080, 40002, 2, 123)], steers);
        Assert.Equal([40001, 40002], guarded);
    }

    [Fact]
    public void A_consistent_namespace_holds()
    {
        var report = HandoffInvariant.Evaluate("x", State(), Table, Listening, _ => true);

        Assert.True(report.Holds, report.ToString());
    }

    [Fact]
    public void A_steer_and_a_guard_of_a_dead_generation_are_violations()
    {
        var report = HandoffInvariant.Evaluate("x", State(), Table, Listening, p => p.Pid != 123);

        Assert.Contains(report.Violations, v => v.Contains("steers to dead generation 2", StringComparison.Ordinal));
        Assert.Contains(report.Violations, v => v.Contains("guard on :40002 of dead generation 2", StringComparison.Ordinal));
    }

    [Fact]
    public void A_steer_to_a_port_nobody_listens_on_and_state_that_disagrees_with_the_kernel_are_violations()
    {
        var deaf = HandoffInvariant.Evaluate("x", State(), Table, [new(40001, [122])], _ => true);
        var disagreeing = HandoffInvariant.Evaluate("x", State(GenerationState.Draining) with { TransactionPending = true }, Table, Listening, _ => true);

        Assert.Contains(deaf.Violations, v => v.Contains("no socket of pid 123 listens on :40002", StringComparison.Ordinal));
        Assert.Contains(disagreeing.Violations, v => v.Contains("which is Draining, not active", StringComparison.Ordinal));
        Assert.Contains(disagreeing.Violations, v => v.Contains("transactionPending", StringComparison.Ordinal));
    }

    [Fact]
    public void Ss_output_gives_ports_and_pids()
    {
        var sockets = HandoffInvariant.ParseListening(
            "LISTEN 0      512                *:40002            *:*    users:((\"dotnet\",pid=123,fd=250),(\"dotnet\",pid=124,fd=3))\n" +
            "LISTEN 0      4096       127.0.0.1:631        0.0.0.0:*\n");

        Assert.Equal(40002, sockets[0].Port);
        Assert.Equal([123, 124], sockets[0].Pids);
        Assert.Equal(631, sockets[1].Port);
        Assert.Empty(sockets[1].Pids);
    }
}
