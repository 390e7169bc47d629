using System.Buffers.Binary;
using System.Globalization;
using Switchover.Interop;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>TCP flow counts of one generation, from conntrack's view.</summary>
public sealed record FlowCounts(int Established, int HalfOpen, int Closing)
{
    public int Total => Established + HalfOpen + Closing;
}

/// <summary>Where flow counts come from: ctnetlink in this process by default, or a <c>conntrack</c> program.</summary>
internal interface IConntrackSource
{
    /// <summary>How failures name the source: "ctnetlink" or the program's path.</summary>
    string Name { get; }

    Task<FlowCounts> CountAsync(FlowFilter filter, CancellationToken cancellationToken);

    /// <summary>Half-open flows of a generation that can get no new ones (it no longer receives SYNs), counted again on each call.</summary>
    IHalfOpenWatch WatchHalfOpen(FlowFilter filter);

    Task CheckAsync(CancellationToken cancellationToken);
}

/// <summary>A superseded generation's half-open flows, for its drain to poll.</summary>
internal interface IHalfOpenWatch
{
    Task<int> CountAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Counts a generation's conntrack entries: for TPROXY those stamped with its connection mark, for REDIRECT those
/// NAT sent to its private ports. The kernel filters while it walks its table, so a count costs this generation's
/// entries, not the table's.
/// </summary>
internal sealed class ConntrackClient : IFlowCounter
{
    private readonly IConntrackSource _source;
    private readonly Dictionary<(long Id, Steering Steering), IHalfOpenWatch[]> _watches = [];

    public ConntrackClient(IConntrackSource source) => _source = source;

    /// <summary>The <c>conntrack</c> program at <paramref name="conntrackPath"/>, run through <paramref name="runner"/>.</summary>
    public ConntrackClient(ICommandRunner runner, string conntrackPath = "conntrack")
        : this(new ConntrackProgramSource(runner, conntrackPath))
    {
    }

    /// <summary>ctnetlink in-process when <paramref name="conntrackPath"/> is null or empty; otherwise that program.</summary>
    public static ConntrackClient Create(string? conntrackPath) =>
        string.IsNullOrEmpty(conntrackPath) ? new ConntrackClient(CtNetlinkSource.Instance) : new ConntrackClient(CommandRunner.Instance, conntrackPath);

    public string Source => _source.Name;

    /// <summary>Counts the TCP flows whose reply comes from <paramref name="privatePort"/>, i.e. that NAT sent to it.</summary>
    public Task<FlowCounts> CountAsync(int privatePort, CancellationToken cancellationToken) =>
        _source.CountAsync(new FlowFilter(ReplySourcePort: privatePort), cancellationToken);

    /// <summary>Counts the TCP flows whose connection mark, within <paramref name="mask"/>, is <paramref name="mark"/>.</summary>
    public Task<FlowCounts> CountMarkedAsync(uint mark, uint mask, CancellationToken cancellationToken) =>
        _source.CountAsync(new FlowFilter(mark, mask), cancellationToken);

    /// <summary>
    /// The TCP flows of a generation: for REDIRECT those NAT sent to its private ports, for TPROXY those stamped with
    /// its connection mark.
    /// </summary>
    public Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken) =>
        CountAsync(generation, halfOpenOnly: false, cancellationToken);

    /// <summary>
    /// The number of a superseded generation's flows whose handshake has not completed: what its drain waits for.
    /// A generation that no longer receives SYNs (the takeover's transaction steered them away before its drain began)
    /// gets no new half-open flow, so its set only shrinks: the first call for a generation reads that set from the
    /// kernel (which walks its whole table once, filtering by mark or reply port and by "not assured"), and later calls
    /// ask the kernel again about those entries only, each a hash lookup: a poll costs the generation's half-open
    /// flows, not its ten thousand established ones, nor the host's table.
    /// </summary>
    public async Task<int> CountHalfOpenAsync(GenerationRecord generation, CancellationToken cancellationToken)
    {
        if (!_watches.TryGetValue((generation.Id, generation.Steering), out var watches))
        {
            watches = generation.Steering == Steering.Tproxy
                ? [_source.WatchHalfOpen(new FlowFilter(HandoffTable.CtMarkOf(generation.Id), HandoffTable.CtMarkMask, HalfOpenOnly: true))]
                : [.. generation.Ports.Select(p => p.PrivatePort).Distinct().Select(p => _source.WatchHalfOpen(new FlowFilter(ReplySourcePort: p, HalfOpenOnly: true)))];
            _watches[(generation.Id, generation.Steering)] = watches;
        }

        var total = 0;
        foreach (var watch in watches)
        {
            total += await watch.CountAsync(cancellationToken).ConfigureAwait(false);
        }

        return total;
    }

    /// <summary>The TCP flows of a generation on one of its endpoints.</summary>
    public Task<FlowCounts> CountAsync(GenerationRecord generation, PortMapping port, CancellationToken cancellationToken) =>
        generation.Steering == Steering.Tproxy
            ? _source.CountAsync(
                new FlowFilter(HandoffTable.CtMarkOf(generation.Id), HandoffTable.CtMarkMask, OriginalDestinationPort: port.PublicPort), cancellationToken)
            : CountAsync(port.PrivatePort, cancellationToken);

    /// <summary>Checks that flows can be read (ctnetlink answers, or the program runs).</summary>
    public Task CheckAsync(CancellationToken cancellationToken) => _source.CheckAsync(cancellationToken);

    private async Task<FlowCounts> CountAsync(GenerationRecord generation, bool halfOpenOnly, CancellationToken cancellationToken)
    {
        if (generation.Steering == Steering.Tproxy)
        {
            return await _source.CountAsync(
                new FlowFilter(HandoffTable.CtMarkOf(generation.Id), HandoffTable.CtMarkMask, HalfOpenOnly: halfOpenOnly), cancellationToken).ConfigureAwait(false);
        }

        var total = new FlowCounts(0, 0, 0);
        foreach (var port in generation.Ports.Select(p => p.PrivatePort).Distinct())
        {
            var counts = await _source.CountAsync(new FlowFilter(ReplySourcePort: port, HalfOpenOnly: halfOpenOnly), cancellationToken).ConfigureAwait(false);
            total = new FlowCounts(total.Established + counts.Established, total.HalfOpen + counts.HalfOpen, total.Closing + counts.Closing);
        }

        return total;
    }

    /// <summary>enum tcp_conntrack: SYN_SENT 1, SYN_RECV 2, ESTABLISHED 3, SYN_SENT2 9; the rest are closing or closed.</summary>
    internal static FlowCounts Classify(IEnumerable<byte?> tcpStates)
    {
        int established = 0, halfOpen = 0, closing = 0;
        foreach (var state in tcpStates)
        {
            switch (state)
            {
                case 1 or 2 or 9:
                    halfOpen++;
                    break;
                case 3:
                    established++;
                    break;
                default:
                    closing++;
                    break;
            }
        }

        return new FlowCounts(established, halfOpen, closing);
    }
}

/// <summary>
/// ctnetlink over a NETLINK_NETFILTER socket of this process: one filtered dump per count (two for a tuple filter, one
/// per family). Chosen over libnetfilter_conntrack: the request is three attributes and the answer five, and a socket
/// of our own has no callback API to bridge, no library to find at run time, and a layout a golden test pins.
/// </summary>
internal sealed class CtNetlinkSource(Func<int, NetlinkSocket> open) : IConntrackSource
{
    public static CtNetlinkSource Instance { get; } = new(NetlinkSocket.Open);

    public string Name => "ctnetlink";

    public Task<FlowCounts> CountAsync(FlowFilter filter, CancellationToken cancellationToken)
    {
        var states = new List<byte?>();
        using var socket = Open();
        foreach (var family in CtNetlink.Families(filter))
        {
            var request = CtNetlink.DumpRequest(filter, family, NetlinkSocket.NextSequence());
            try
            {
                socket.Dump(request, (type, payload) =>
                {
                    if (type == CtNetlink.EntryMessageType)
                    {
                        var flow = CtNetlink.ParseEntry(payload);
                        if (filter.Matches(flow))
                        {
                            states.Add(flow.TcpState);
                        }
                    }
                }, cancellationToken);
            }
            catch (NetlinkException e)
            {
                throw Explain(e);
            }
        }

        return Task.FromResult(ConntrackClient.Classify(states));
    }

    public Task CheckAsync(CancellationToken cancellationToken)
    {
        using var socket = Open();
        try
        {
            socket.Dump(CtNetlink.ProbeRequest(NetlinkSocket.NextSequence()), (_, _) => { }, cancellationToken);
        }
        catch (NetlinkException e) when (e.Errno == 2)
        {
            // ENOENT: ctnetlink answered, and we may ask.
        }
        catch (NetlinkException e)
        {
            throw Explain(e);
        }

        return Task.CompletedTask;
    }

    public IHalfOpenWatch WatchHalfOpen(FlowFilter filter) => new Watch(this, filter);

    /// <summary>The half-open entries the first dump found, as lookup requests; each poll asks again about those still half-open.</summary>
    private List<byte[]> Snapshot(FlowFilter filter, CancellationToken cancellationToken)
    {
        var lookups = new List<byte[]>();
        using var socket = Open();
        foreach (var family in CtNetlink.Families(filter))
        {
            try
            {
                socket.Dump(CtNetlink.DumpRequest(filter, family, NetlinkSocket.NextSequence()), (type, payload) =>
                {
                    if (type == CtNetlink.EntryMessageType && filter.Matches(CtNetlink.ParseEntry(payload)))
                    {
                        lookups.Add(CtNetlink.LookupRequest(payload, 0));
                    }
                }, cancellationToken);
            }
            catch (NetlinkException e)
            {
                throw Explain(e);
            }
        }

        return lookups;
    }

    private List<byte[]> StillHalfOpen(List<byte[]> lookups, FlowFilter filter, CancellationToken cancellationToken)
    {
        if (lookups.Count == 0)
        {
            return lookups;
        }

        var still = new List<byte[]>();
        using var socket = Open();
        foreach (var lookup in lookups)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(lookup.AsSpan(8), NetlinkSocket.NextSequence());
            var halfOpen = false;
            try
            {
                socket.Dump(lookup, (type, payload) => halfOpen |= type == CtNetlink.EntryMessageType && filter.Matches(CtNetlink.ParseEntry(payload)), cancellationToken);
            }
            catch (NetlinkException e) when (e.Errno == 2)
            {
                // ENOENT: the entry is gone (reset, or timed out).
            }
            catch (NetlinkException e)
            {
                throw Explain(e);
            }

            if (halfOpen)
            {
                still.Add(lookup);
            }
        }

        return still;
    }

    private sealed class Watch(CtNetlinkSource source, FlowFilter filter) : IHalfOpenWatch
    {
        private List<byte[]>? _lookups;

        public Task<int> CountAsync(CancellationToken cancellationToken)
        {
            _lookups = _lookups is null ? source.Snapshot(filter, cancellationToken) : source.StillHalfOpen(_lookups, filter, cancellationToken);
            return Task.FromResult(_lookups.Count);
        }
    }

    private NetlinkSocket Open()
    {
        try
        {
            return open(NetlinkSocket.NetlinkNetfilter);
        }
        catch (NetlinkException e)
        {
            throw Explain(e);
        }
    }

    private static ConntrackException Explain(NetlinkException e) => new(e.NotPermitted
        ? $"ctnetlink may not read the connection table ({e.Message}). Run as root or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit)."
        : $"ctnetlink could not read the connection table ({e.Message}). Is connection tracking available (modprobe nf_conntrack_netlink)?", e);
}

/// <summary>Reads conntrack entries through the <c>conntrack</c> program (<c>conntrack -L -p tcp</c> and its filters).</summary>
internal sealed class ConntrackProgramSource(ICommandRunner runner, string conntrackPath) : IConntrackSource
{
    public string Name => conntrackPath;

    public async Task<FlowCounts> CountAsync(FlowFilter filter, CancellationToken cancellationToken)
    {
        var command = Command.Create(conntrackPath, ["-L", "-p", "tcp", .. Arguments(filter)]) with { Timeout = TimeSpan.FromSeconds(10) };
        CommandResult result;
        try
        {
            result = await runner.RunAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandNotFoundException e)
        {
            throw new InvalidOperationException("conntrack was not found. Install it (apt-get install conntrack).", e);
        }

        return Parse(result.StandardOutput);
    }

    /// <summary>The program reads the table again on each poll (it has no lookup by a remembered entry).</summary>
    public IHalfOpenWatch WatchHalfOpen(FlowFilter filter) => new Watch(this, filter);

    private sealed class Watch(ConntrackProgramSource source, FlowFilter filter) : IHalfOpenWatch
    {
        public async Task<int> CountAsync(CancellationToken cancellationToken) =>
            (await source.CountAsync(filter, cancellationToken).ConfigureAwait(false)).HalfOpen;
    }

    /// <summary>The program's filter options; it has none for "not assured", so half-open counts take all and keep HalfOpen.</summary>
    internal static string[] Arguments(FlowFilter filter)
    {
        var arguments = new List<string>();
        if (filter.Mark is { } mark)
        {
            arguments.AddRange(["--mark", string.Create(CultureInfo.InvariantCulture, $"0x{mark:x8}/0x{filter.MarkMask:x8}")]);
        }

        if (filter.OriginalDestinationPort is { } dport)
        {
            arguments.AddRange(["--dport", dport.ToString(CultureInfo.InvariantCulture)]);
        }

        if (filter.ReplySourcePort is { } port)
        {
            arguments.AddRange(["--reply-port-src", port.ToString(CultureInfo.InvariantCulture)]);
        }

        return [.. arguments];
    }

    public async Task CheckAsync(CancellationToken cancellationToken)
    {
        try
        {
            await runner.RunAsync(Command.Create(conntrackPath, "--version") with { Timeout = TimeSpan.FromSeconds(10) }, cancellationToken)
                .ConfigureAwait(false);
        }
        catch (CommandNotFoundException e)
        {
            throw new InvalidOperationException(
                "conntrack was not found. Switchover reads conntrack to drain without dropping half-open connections: install it (apt-get install conntrack).", e);
        }
    }

    internal static FlowCounts Parse(string output)
    {
        int established = 0, halfOpen = 0, closing = 0;
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // "tcp      6 431999 ESTABLISHED src=... dst=... sport=... dport=... src=..."
            var fields = line.Split(' ', 5, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 4 || fields[0] != "tcp")
            {
                continue;
            }

            switch (fields[3])
            {
                case "SYN_SENT" or "SYN_RECV" or "SYN_SENT2":
                    halfOpen++;
                    break;
                case "ESTABLISHED":
                    established++;
                    break;
                default:
                    closing++;
                    break;
            }
        }

        return new FlowCounts(established, halfOpen, closing);
    }
}

/// <summary>Connection tracking could not be read. The message says why and what to do.</summary>
public sealed class ConntrackException(string message, Exception inner) : Exception(message, inner);
