using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Switchover.Netfilter;
using Switchover.Sockets;
using Switchover.State;

namespace Switchover.Hosting;

internal sealed record DrainReport(TimeSpan Elapsed, bool ReachedQuiet, int OpenConnections);

/// <summary>
/// Keeps a superseded generation's listeners open until nothing can still arrive on them: connections whose SYN was
/// steered to this generation just before the swap (and their SYN retransmits, which the kernel still hands to the
/// half-open request here) complete their handshake in this listener's accept queue, and closing it then would reset them.
/// Done when, for a whole quiet period, the accept queues are empty, conntrack holds no half-open flow of this
/// generation (stamped with its mark, or NAT'd to its private ports), and either no connection is open or none has sent a request.
/// </summary>
internal sealed class Drain(LocalGeneration generation, IFlowCounter conntrack, DrainOptions options, ILogger logger)
{
    public async Task<DrainReport> RunAsync(GenerationRecord record, CancellationToken cancellationToken)
    {
        var ports = record.Ports;
        generation.StartDraining();
        var stopwatch = Stopwatch.StartNew();
        var quietSince = (TimeSpan?)null;
        var conntrackWorks = true;
        while (stopwatch.Elapsed < options.MaxDuration && !cancellationToken.IsCancellationRequested)
        {
            var busy = ports.Any(p => ListenQueue.Read(p.PrivatePort) is > 0);
            if (!busy && conntrackWorks)
            {
                try
                {
                    busy = (await conntrack.CountAsync(record, cancellationToken).ConfigureAwait(false)).HalfOpen > 0;
                }
                catch (OperationCanceledException)
                {
                    // The host's shutdown timeout fired (a busy conntrack table is slow to dump): the drain ends here.
                    break;
                }
                catch (Exception e)
                {
                    conntrackWorks = false;
                    Log.ConntrackUnavailable(logger, e.Message);
                }
            }

            var idle = generation.OpenConnections == 0 || generation.MillisecondsSinceLastRequest >= options.QuietPeriod.TotalMilliseconds;
            if (busy || !idle)
            {
                quietSince = null;
            }
            else
            {
                quietSince ??= stopwatch.Elapsed;
                if (stopwatch.Elapsed - quietSince >= options.QuietPeriod)
                {
                    return new DrainReport(stopwatch.Elapsed, true, generation.OpenConnections);
                }
            }

            try
            {
                await Task.Delay(options.PollInterval, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        return new DrainReport(stopwatch.Elapsed, false, generation.OpenConnections);
    }
}
