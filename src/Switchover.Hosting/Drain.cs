using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Switchover.Netfilter;
using Switchover.Sockets;
using Switchover.State;

namespace Switchover.Hosting;

/// <param name="OpenAtStart">Connections open when the drain began.</param>
/// <param name="Connections">The connections still open when it ended (Kestrel's stop closes them).</param>
internal sealed record DrainReport(TimeSpan Elapsed, bool ReachedQuiet, int OpenAtStart, ConnectionSurvey Connections)
{
    public int OpenConnections => Connections.Open;
}

/// <summary>How one drain runs: the options as they apply to this generation, with the server's keep-alive timeout.</summary>
/// <param name="Bound">The most the drain lasts (the host's shutdown timeout may cut it shorter; HandoffService raises it to cover this).</param>
/// <param name="KeepAliveTimeout">How long the server itself keeps an idle connection open (Kestrel's limit).</param>
internal sealed record DrainPlan(IdleConnectionPolicy IdleConnections, TimeSpan QuietPeriod, TimeSpan PollInterval, TimeSpan Bound, TimeSpan KeepAliveTimeout)
{
    /// <param name="superseded">
    /// A newer generation took over (a deploy). False when this one stepped down with no successor: its clients have
    /// nowhere to go, so idle connections are closed after the quiet period whatever the policy.
    /// </param>
    public static DrainPlan For(DrainOptions options, TimeSpan keepAliveTimeout, bool superseded)
    {
        var policy = superseded ? options.IdleConnections : IdleConnectionPolicy.CloseAfterQuiet;
        var bound = superseded ? options.Bound(keepAliveTimeout) : options.MaxDuration ?? DrainOptions.CloseAfterQuietBound;
        return new DrainPlan(policy, options.QuietPeriod, options.PollInterval, bound, keepAliveTimeout);
    }

    /// <summary>
    /// Under <see cref="IdleConnectionPolicy.WaitForClient"/>, why the drain's bound cannot wait out the keep-alive
    /// timeout (the bound wins), or null when it can. Kestrel's keep-alive timeout is only known once its options are
    /// built, so this is a warning at start rather than a validation error.
    /// </summary>
    public static string? BoundWarning(DrainOptions options, TimeSpan keepAliveTimeout)
    {
        if (options.IdleConnections != IdleConnectionPolicy.WaitForClient)
        {
            return null;
        }

        if (DrainOptions.IsInfinite(keepAliveTimeout))
        {
            var bound = options.Bound(keepAliveTimeout);
            return $"Kestrel's keep-alive timeout is infinite, so Switchover:Drain:IdleConnections=WaitForClient waits for idle connections for at most " +
                   $"{bound.TotalSeconds:0} s (Switchover:Drain:MaxDuration{(options.MaxDuration is null ? ", default" : string.Empty)}); connections " +
                   "still idle then are closed. Give Kestrel a finite KeepAliveTimeout (KestrelServerOptions.Limits) or set MaxDuration to what you mean.";
        }

        var needed = keepAliveTimeout + options.QuietPeriod;
        return options.MaxDuration is { } max && max < needed
            ? $"Switchover:Drain:MaxDuration ({max.TotalSeconds:0.#} s) is shorter than Kestrel's keep-alive timeout ({keepAliveTimeout.TotalSeconds:0.#} s) " +
              $"plus Switchover:Drain:QuietPeriod ({options.QuietPeriod.TotalSeconds:0.#} s). MaxDuration wins: a superseded generation closes idle " +
              $"connections after {max.TotalSeconds:0.#} s, and a client that reuses one then without checking it loses its request. Raise MaxDuration to at " +
              $"least {needed.TotalSeconds:0.#} s (or remove it: the default is the keep-alive timeout plus {DrainOptions.KeepAliveMargin.TotalSeconds:0} s), " +
              "or lower Kestrel's KeepAliveTimeout."
            : null;
    }
}

/// <summary>
/// Keeps a superseded generation's listeners open until nothing can still arrive on them, and, by default, its
/// connections open until their clients are done with them.
/// <para>
/// Listeners: connections whose SYN was steered to this generation just before the swap (and their SYN retransmits,
/// which the kernel still hands to the half-open request here) complete their handshake in this listener's accept
/// queue, and closing it then would reset them. So the drain needs, for a whole quiet period, empty accept queues and
/// no half-open flow of this generation in conntrack (stamped with its mark, or NAT'd to its private ports).
/// </para>
/// <para>
/// Connections, under <see cref="IdleConnectionPolicy.WaitForClient"/>: an idle HTTP/1.1 keep-alive connection that
/// the server closes is a race with the client's next request on it, which a client that reuses pooled connections
/// without checking them (Python's http.client) loses. Without a deploy, the server closes an idle connection only
/// after its keep-alive timeout. So the drain waits until every HTTP/1.x connection has been closed, by its client or
/// by Kestrel after its next request (answered with <c>Connection: close</c>), or has been idle past the keep-alive
/// timeout (Kestrel closes those itself, as it would without a deploy). HTTP/2 connections are moved off with GOAWAY
/// (<see cref="Http2GoAway"/>) and only need the generation to be quiet, as under
/// <see cref="IdleConnectionPolicy.CloseAfterQuiet"/>, where every connection does: either none is open, or no request
/// arrived for the quiet period.
/// </para>
/// </summary>
internal sealed class Drain(LocalGeneration generation, IFlowCounter conntrack, DrainPlan plan, ILogger logger)
{
    public async Task<DrainReport> RunAsync(GenerationRecord record, CancellationToken cancellationToken)
    {
        var ports = record.Ports;
        generation.StartDraining();
        var openAtStart = generation.OpenConnections;
        var stopwatch = Stopwatch.StartNew();
        var quietSince = (TimeSpan?)null;
        var conntrackWorks = true;
        var toldWaiting = false;
        var quietMs = plan.QuietPeriod.TotalMilliseconds;
        while (stopwatch.Elapsed < plan.Bound && !cancellationToken.IsCancellationRequested)
        {
            var busy = ports.Any(p => ListenQueue.Read(p.PrivatePort) is > 0);
            if (!busy && conntrackWorks)
            {
                try
                {
                    busy = await conntrack.CountHalfOpenAsync(record, cancellationToken).ConfigureAwait(false) > 0;
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

            var requestsQuiet = generation.MillisecondsSinceLastRequest >= quietMs;
            bool connectionsDone;
            if (plan.IdleConnections == IdleConnectionPolicy.WaitForClient)
            {
                var survey = generation.SurveyConnections(plan.KeepAliveTimeout);
                connectionsDone = survey.Waiting == 0 && (survey.Http2 == 0 || requestsQuiet);
                if (!connectionsDone && !busy && !toldWaiting && survey.Waiting > 0)
                {
                    toldWaiting = true;
                    Log.DrainWaitsForClients(logger, record.Id, survey.Busy, survey.Idle, survey.LongestIdle.TotalSeconds,
                        plan.KeepAliveTimeout.TotalSeconds, plan.Bound.TotalSeconds);
                }
            }
            else
            {
                connectionsDone = generation.OpenConnections == 0 || requestsQuiet;
            }

            if (busy || !connectionsDone)
            {
                quietSince = null;
            }
            else
            {
                quietSince ??= stopwatch.Elapsed;
                if (stopwatch.Elapsed - quietSince >= plan.QuietPeriod)
                {
                    return Report(true);
                }
            }

            try
            {
                await Task.Delay(plan.PollInterval, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        return Report(false);

        DrainReport Report(bool quiet) => new(stopwatch.Elapsed, quiet, openAtStart, generation.SurveyConnections(plan.KeepAliveTimeout));
    }
}
