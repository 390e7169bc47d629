using System.Globalization;
using Switchover.Processes;

namespace Switchover.Netfilter;

/// <summary>TCP flow counts of one private port, from conntrack's view (what NAT redirected to it).</summary>
public sealed record FlowCounts(int Established, int HalfOpen, int Closing)
{
    public int Total => Established + HalfOpen + Closing;
}

/// <summary>Reads conntrack entries through the <c>conntrack</c> binary.</summary>
internal sealed class ConntrackClient(ICommandRunner runner, string conntrackPath = "conntrack")
{
    /// <summary>Counts the TCP flows whose reply comes from <paramref name="privatePort"/>, i.e. that NAT sent to it.</summary>
    public async Task<FlowCounts> CountAsync(int privatePort, CancellationToken cancellationToken)
    {
        var command = Command.Create(conntrackPath, "-L", "-p", "tcp", "--reply-port-src", privatePort.ToString(CultureInfo.InvariantCulture))
            with { Timeout = TimeSpan.FromSeconds(10) };
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
