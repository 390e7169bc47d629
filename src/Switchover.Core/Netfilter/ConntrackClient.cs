using System.Globalization;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>TCP flow counts of one generation, from conntrack's view.</summary>
public sealed record FlowCounts(int Established, int HalfOpen, int Closing)
{
    public int Total => Established + HalfOpen + Closing;
}

/// <summary>Reads conntrack entries through the <c>conntrack</c> binary.</summary>
internal sealed class ConntrackClient(ICommandRunner runner, string conntrackPath = "conntrack") : IFlowCounter
{
    /// <summary>Counts the TCP flows whose reply comes from <paramref name="privatePort"/>, i.e. that NAT sent to it.</summary>
    public Task<FlowCounts> CountAsync(int privatePort, CancellationToken cancellationToken) =>
        CountAsync(["--reply-port-src", privatePort.ToString(CultureInfo.InvariantCulture)], cancellationToken);

    /// <summary>Counts the TCP flows whose connection mark, within <paramref name="mask"/>, is <paramref name="mark"/>.</summary>
    public Task<FlowCounts> CountMarkedAsync(uint mark, uint mask, CancellationToken cancellationToken) =>
        CountAsync(["--mark", MarkFilter(mark, mask)], cancellationToken);

    /// <summary>
    /// The TCP flows of a generation: for REDIRECT those NAT sent to its private ports, for TPROXY those stamped with
    /// its connection mark.
    /// </summary>
    public async Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken)
    {
        if (generation.Steering == Steering.Tproxy)
        {
            return await CountMarkedAsync(HandoffTable.CtMarkOf(generation.Id), HandoffTable.CtMarkMask, cancellationToken).ConfigureAwait(false);
        }

        var total = new FlowCounts(0, 0, 0);
        foreach (var port in generation.Ports.Select(p => p.PrivatePort).Distinct())
        {
            var counts = await CountAsync(port, cancellationToken).ConfigureAwait(false);
            total = new FlowCounts(total.Established + counts.Established, total.HalfOpen + counts.HalfOpen, total.Closing + counts.Closing);
        }

        return total;
    }

    /// <summary>The TCP flows of a generation on one of its endpoints.</summary>
    public Task<FlowCounts> CountAsync(GenerationRecord generation, PortMapping port, CancellationToken cancellationToken) =>
        generation.Steering == Steering.Tproxy
            ? CountAsync(
                ["--mark", MarkFilter(HandoffTable.CtMarkOf(generation.Id), HandoffTable.CtMarkMask), "--dport", port.PublicPort.ToString(CultureInfo.InvariantCulture)],
                cancellationToken)
            : CountAsync(port.PrivatePort, cancellationToken);

    private static string MarkFilter(uint mark, uint mask) => string.Create(CultureInfo.InvariantCulture, $"0x{mark:x8}/0x{mask:x8}");

    private async Task<FlowCounts> CountAsync(string[] filter, CancellationToken cancellationToken)
    {
        var command = Command.Create(conntrackPath, ["-L", "-p", "tcp", .. filter]) with { Timeout = TimeSpan.FromSeconds(10) };
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

    /// <summary>Checks that the conntrack binary runs.</summary>
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
