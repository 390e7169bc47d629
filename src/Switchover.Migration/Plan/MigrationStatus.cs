using System.Globalization;
using System.Text.Json;
using Switchover.Migration.Gre;
using Switchover.Migration.Model;
using Switchover.Netfilter;
using Switchover.Processes;

namespace Switchover.Migration.Plan;

/// <summary>Flows of one moved tuple: through the tunnel (marked) and still on this host; null when conntrack could not be read.</summary>
public sealed record TupleStatus(string Tuple, int? TunnelledFlows, int? LocalFlows);

public sealed record MigrationStatus(
    string Name,
    MigrationSide Side,
    string TunnelDevice,
    string LocalOuter,
    string RemoteOuter,
    bool TunnelUp,
    long TunnelRxPackets,
    long TunnelTxPackets,
    IReadOnlyList<TupleStatus> Tuples,
    long? DirectPackets,
    IReadOnlyList<string> Warnings,
    TunnelCounters? AgentCounters = null,
    long? TunnelledPackets = null,
    string Encapsulation = "gre");

/// <summary>Reads a migration's live state on this host: flows per tuple, tunnel counters, direct arrivals, drift.</summary>
internal sealed class MigrationStatusReader(ICommandRunner runner)
{
    public async Task<MigrationStatus> ReadAsync(MigrationJournal journal, CancellationToken cancellationToken, string? tunnelSocket = null)
    {
        var spec = journal.ToSpec();
        var warnings = new List<string>();
        var tuples = new List<TupleStatus>();
        foreach (var tuple in spec.Tuples)
        {
            var flows = await CountFlowsAsync(tuple, spec.Mark, cancellationToken).ConfigureAwait(false);
            if (flows.Error is not null)
            {
                warnings.Add($"The flows of {tuple} are unknown: {flows.Error}");
            }

            tuples.Add(new TupleStatus(tuple.ToString(), flows.Tunnelled, flows.Local));
        }

        var link = await runner.TryRunAsync(Command.Create("ip", "-s", "-j", "link", "show", "dev", spec.TunnelDevice), cancellationToken).ConfigureAwait(false);
        var (up, rx, tx) = link.ExitCode == 0 ? ParseLink(link.StandardOutput) : (false, 0L, 0L);
        if (link.ExitCode != 0)
        {
            warnings.Add($"The tunnel device {spec.TunnelDevice} is gone: is the tunnel agent running?");
        }

        foreach (var ipv6 in new[] { false, true })
        {
            var rules = await runner.TryRunAsync(Command.Create("ip", "-j", ipv6 ? "-6" : "-4", "rule", "show"), cancellationToken).ConfigureAwait(false);
            if (rules.ExitCode == 0 && HostFacts.ParseRules(rules.StandardOutput, ipv6).Any(r => r.IsLocalTable && r.Priority < MigrationSpec.MarkRulePriority)
                && journal.Applied.Any(c => c.Id == $"local-rule:{(ipv6 ? 6 : 4)}"))
            {
                warnings.Add($"The local table's IPv{(ipv6 ? 6 : 4)} rule is back before the tunnel's rules (a network manager may have restored it): " +
                    "moved flows are not steered. Run 'switchover migrate setup' again with the same arguments.");
            }
        }

        long? direct = null;
        long? tunnelled = null;
        if (spec.Side == MigrationSide.New)
        {
            (direct, tunnelled) = await ReadArrivalsAsync(spec, cancellationToken).ConfigureAwait(false);
            if (direct > 0)
            {
                warnings.Add($"{direct} packets for the moved addresses arrived here directly, not through the tunnel: the provider routes them to this host now. " +
                    $"Run 'switchover migrate finalize --name {spec.Name}' here, then tear down the old host's side.");
            }
        }

        // The userspace tunnel's agent counts what it dropped and why; the kernel dataplane has only the device's counters.
        TunnelCounters? counters = null;
        try
        {
            var agent = await TunnelAgentClient.GetStatusAsync(tunnelSocket ?? TunnelAgent.DefaultSocketPath(spec.TunnelDevice), cancellationToken).ConfigureAwait(false);
            // The socket path is per device name, so make sure it is this migration's tunnel, not a namesake's elsewhere.
            counters = agent.Tunnels.FirstOrDefault(t => t.Name == spec.TunnelDevice
                && t.Local == spec.LocalOuter.ToString() && t.Remote == spec.RemoteOuter.ToString() && t.Key == spec.Key)?.Counters;
        }
        catch (TunnelException)
        {
            // No tunnel agent for this device: a kernel GRE device.
        }

        if (counters is { RxDropped: > 0 } || counters is { TxErrors: > 0 })
        {
            warnings.Add(string.Create(CultureInfo.InvariantCulture,
                $"The tunnel agent dropped {counters.RxStray} stray, {counters.RxWrongKey} wrong-key and {counters.RxMalformed} malformed GRE packets and failed {counters.TxErrors} sends ({counters.TxTooBig} too big for the path: lower --mtu)."));
        }

        return new MigrationStatus(spec.Name.Value, spec.Side, spec.TunnelDevice, spec.LocalOuter.ToString(), spec.RemoteOuter.ToString(),
            up, rx, tx, tuples, direct, warnings, counters, tunnelled, MigrationSpec.EncapsulationName(spec.Encapsulation));
    }

    /// <summary>
    /// The new side's counters of packets for the moved addresses: arrived directly, and through the tunnel (null
    /// where unknown; tables set up before the tunnelled counter existed have none).
    /// </summary>
    public async Task<(long? Direct, long? Tunnelled)> ReadArrivalsAsync(MigrationSpec spec, CancellationToken cancellationToken)
    {
        var table = new SteeringTable(spec.Name.Value, OldSide: false, spec.TunnelDevice, spec.Mark, spec.Tuples, spec.MovedAddresses).TableName;
        return (await ReadCounterAsync(table, "direct", cancellationToken).ConfigureAwait(false),
            await ReadCounterAsync(table, "tunnelled", cancellationToken).ConfigureAwait(false));
    }

    private async Task<long?> ReadCounterAsync(string table, string counter, CancellationToken cancellationToken)
    {
        var result = await runner.TryRunAsync(Command.Create("nft", "-j", "list", "counter", "inet", table, counter), cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0 ? ParseCounter(result.StandardOutput) : null;
    }

    private async Task<(int? Tunnelled, int? Local, string? Error)> CountFlowsAsync(SteeredTuple tuple, uint mark, CancellationToken cancellationToken)
    {
        var result = await runner.TryRunAsync(Command.Create("conntrack", "-L", "-f", tuple.IsIPv6 ? "ipv6" : "ipv4", "-p", tuple.ProtocolName,
            "--orig-dst", tuple.Address.ToString(), "--dport", tuple.Port.ToString(CultureInfo.InvariantCulture)), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            return (null, null, $"conntrack -L failed (exit {result.ExitCode}): {result.StandardError.Trim()}");
        }

        var (tunnelled, local) = CountMarked(result.StandardOutput, mark);
        return (tunnelled, local, null);
    }

    /// <summary>
    /// Entries of `conntrack -L` whose mark carries <paramref name="mark"/> in the migration's bits
    /// (<see cref="SteeringTable.CtMarkMask"/>: mark=47, or 47 with a hosting generation's bits, never mark=470), and the others.
    /// </summary>
    internal static (int Marked, int Other) CountMarked(string conntrackOutput, uint mark)
    {
        var lines = conntrackOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var count = lines.Count(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Any(field =>
            field.StartsWith("mark=", StringComparison.Ordinal)
            && uint.TryParse(field.AsSpan("mark=".Length), NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            && SteeringTable.CarriesMark(value, mark)));
        return (count, lines.Length - count);
    }

    internal static (bool Up, long Rx, long Tx) ParseLink(string json)
    {
        using var document = JsonDocument.Parse(json);
        var link = document.RootElement[0];
        var up = link.TryGetProperty("operstate", out var state) && state.GetString() is "UP" or "UNKNOWN";
        var stats = link.GetProperty("stats64");
        return (up, stats.GetProperty("rx").GetProperty("packets").GetInt64(), stats.GetProperty("tx").GetProperty("packets").GetInt64());
    }

    internal static long? ParseCounter(string json)
    {
        using var document = JsonDocument.Parse(json);
        foreach (var item in document.RootElement.GetProperty("nftables").EnumerateArray())
        {
            if (item.TryGetProperty("counter", out var counter))
            {
                return counter.GetProperty("packets").GetInt64();
            }
        }

        return null;
    }
}
