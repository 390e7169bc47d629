using Switchover.Lab;
using Switchover.Load.Clients;
using Switchover.Load.Contenders;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>One contender under one client and connection mode: the load it saw and the handoffs it did.</summary>
internal sealed record RollingRun(
    ContenderKind Contender,
    string ContenderDescription,
    ClientKind Client,
    ConnectionMode Mode,
    DateTime LoadStartedUtc,
    IReadOnlyList<HandoffRecord> Handoffs,
    LoadResult? Driver,
    WrkResult? Wrk,
    int RetiredExited,
    int RetiredTotal,
    IReadOnlyList<string> Problems)
{
    /// <summary>What the reader should know that is not a failure (a baseline's handoffs that did not fit in wrk's time).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Whatever helps to find out why a problem happened, e.g. the output of a process that crashed.</summary>
    public IReadOnlyList<string> Diagnostics { get; init; } = [];

    public long Requests => Driver?.TotalRequests ?? Wrk?.Requests ?? 0;

    /// <summary>
    /// Failed requests, plus (our driver) kept-alive connections the server closed without saying so: a client without
    /// our check before reuse would have sent a request into them.
    /// </summary>
    public long Failures => Driver is { } d ? d.FailureCount + d.StaleConnectionsDiscarded + d.Abandoned : Wrk?.Failures ?? 0;

    public double RequestsPerSecond => Driver?.RequestsPerSecond ?? Wrk?.RequestsPerSecond ?? 0;

    /// <summary>A Switchover run fails on any failed request, and on any problem with its handoffs.</summary>
    public bool Clean => Failures == 0 && Problems.Count == 0;

    /// <summary>Seconds of the run in which at least one request failed (our driver only).</summary>
    public int SecondsWithFailures => Driver?.Timeline.Count(s => s.Failed > 0) ?? 0;

    /// <summary>Per handoff: from its start to the first OK response from the new version (our driver only).</summary>
    public IReadOnlyList<(HandoffRecord Handoff, TimeSpan? FirstServed)> FirstServed()
    {
        var bodies = Driver?.Bodies;
        return Handoffs.Select(h =>
        {
            TimeSpan? first = null;
            if (bodies is not null)
            {
                var prefix = $"v{h.Version} ";
                var seen = bodies.Where(b => b.Key.StartsWith(prefix, StringComparison.Ordinal)).Select(b => b.Value.FirstSeenUtc).ToList();
                if (seen.Count > 0)
                {
                    first = seen.Min() - h.StartedUtc;
                }
            }

            return (h, first);
        }).ToList();
    }

    public string Label => $"{Contender} / {Client} / {Modes.Name(Mode)}";
}

internal static class Modes
{
    public static string Name(ConnectionMode mode) => mode switch
    {
        ConnectionMode.KeepAlive => "keep-alive",
        ConnectionMode.NewConnectionPerRequest => "new connection per request",
        _ => mode.ToString(),
    };

    public static string Short(ConnectionMode mode) => mode switch
    {
        ConnectionMode.KeepAlive => "keepalive",
        ConnectionMode.NewConnectionPerRequest => "newconn",
        _ => mode.ToString().ToLowerInvariant(),
    };
}
