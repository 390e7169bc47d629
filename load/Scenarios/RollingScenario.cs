using System.Diagnostics;
using System.Globalization;
using System.Net;
using Switchover.Lab;
using Switchover.Load.Clients;
using Switchover.Load.Contenders;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>
/// Rolling deploys under load: v1 serves, load starts, then a new version is handed the port at a fixed interval, and
/// load continues a while after the last handoff. Each contender runs in a lab of its own, one after the other, under
/// the same client, connection mode, concurrency and handoff schedule. Switchover runs first: its run is the reference,
/// and the baselines replay its number of handoffs.
/// </summary>
internal sealed class RollingScenario(SuiteSettings settings, Progress progress)
{
    internal const int Port = 8080;
    private const int MaxHandoffs = 10_000;
    private static readonly TimeSpan RetireTimeout = TimeSpan.FromSeconds(40);

    public async Task<IReadOnlyList<RollingRun>> RunAsync(CancellationToken cancellationToken)
    {
        var runs = new List<RollingRun>();
        var order = settings.Contenders.OrderBy(c => c == ContenderKind.Switchover ? 0 : 1).ToList();
        foreach (var client in settings.Clients)
        {
            foreach (var mode in settings.Modes.Where(m => client != ClientKind.Wrk || settings.WrkModes.Contains(m)))
            {
                // Switchover goes first and sets the schedule: our driver hands off until it has the handoffs and the
                // requests asked for; wrk runs for a fixed time, sized from our driver's run in the same mode, and hands
                // off as long as that lasts. The baselines replay the reference's handoff count (capped by
                // BaselineHandoffs) at the same interval, under the same client, for wrk for the same time.
                var driverReference = runs.FirstOrDefault(r => r.Client == ClientKind.Driver && r.Mode == mode && r.Contender == ContenderKind.Switchover);
                var wrkSeconds = WrkSeconds(driverReference);
                int? replay = null;
                foreach (var kind in order.Where(k => client != ClientKind.Wrk || settings.WrkContenders.Contains(k)))
                {
                    // A baseline replaying fewer handoffs than the reference did needs less time (a quarter more than its schedule).
                    var seconds = replay is { } count ? Math.Min(wrkSeconds, (int)Math.Ceiling((Planned(count).TotalSeconds * 1.25) + 1)) : wrkSeconds;
                    var run = await RunOneAsync(kind, client, mode, replay, seconds, cancellationToken);
                    runs.Add(run);
                    if (kind == ContenderKind.Switchover)
                    {
                        replay = Math.Max(1, Math.Min(run.Handoffs.Count, settings.BaselineHandoffs ?? int.MaxValue));
                    }
                }
            }
        }

        return runs;
    }

    private static bool ValidBody(string body) => body.Length > 3 && body[0] == 'v' && body[^1] == '\n';

    private async Task<RollingRun> RunOneAsync(
        ContenderKind kind, ClientKind client, ConnectionMode mode, int? replay, int wrkSeconds, CancellationToken cancellationToken)
    {
        await using var lab = await Labs.CreateAsync(cancellationToken);
        await using var contender = Contender.Create(kind, lab, Port);
        progress.Line($"rolling: {kind} / {client} / {Modes.Name(mode)}: lab {lab.Server.Name} <-> {lab.Client.Name}, starting v1");
        await contender.StartAsync(cancellationToken);

        var problems = new List<string>();
        var notes = new List<string>();
        var diagnostics = new List<string>();
        LoadRun? driver = null;
        LabProcess? wrk = null;
        TimeSpan maxLoad;
        DateTime loadStarted;
        if (client == ClientKind.Driver)
        {
            maxLoad = settings.MaxRunDuration;
            var perTarget = Math.Max(1, settings.Concurrency / 2);
            driver = HttpLoad.Start(
                [
                    new LoadTarget(lab.Client, new IPEndPoint(lab.ServerV4, Port), "net-v4"),
                    new LoadTarget(lab.Client, new IPEndPoint(lab.ServerV6, Port), "net-v6"),
                ],
                new LoadOptions
                {
                    Mode = mode,
                    Concurrency = perTarget,
                    MaxDuration = maxLoad + TimeSpan.FromMinutes(1),
                    MaxRequests = long.MaxValue,
                    RequestsPerSecond = settings.Rate,
                    BodyValidator = ValidBody,
                },
                cancellationToken);
            loadStarted = driver.StartedUtc;
        }
        else
        {
            maxLoad = TimeSpan.FromSeconds(wrkSeconds);
            loadStarted = DateTime.UtcNow;
            wrk = Wrk.Start(lab.Client, new IPEndPoint(lab.ServerV4, Port), settings.Concurrency, wrkSeconds, mode == ConnectionMode.NewConnectionPerRequest);
        }

        await using var driverLifetime = driver;
        var clock = Stopwatch.StartNew();
        var handoffs = new List<HandoffRecord>();
        for (var i = 0; i < MaxHandoffs; i++)
        {
            var requests = driver is null ? 0 : driver.OkRequests + driver.FailedRequests;

            // wrk's requests are known only at its end: its reference run hands off for as long as it runs.
            var enough = replay is { } exact ? i >= exact
                : i >= settings.Handoffs && (driver is null ? settings.MinRequests == 0 : requests >= settings.MinRequests);
            var due = settings.Lead + (settings.Interval * i);
            if (enough)
            {
                break;
            }

            // A handoff slower than the interval delays the next ones; the load (wrk's in particular) does not wait.
            if ((due > clock.Elapsed ? due : clock.Elapsed) + settings.Tail > maxLoad || wrk is { HasExited: true })
            {
                if (replay is not null || i < settings.Handoffs)
                {
                    notes.Add($"only {i} handoffs fit in the {maxLoad.TotalSeconds:0} s of load (handoffs slower than the {settings.Interval.TotalSeconds:0.##} s interval)");
                }

                break;
            }

            if (due > clock.Elapsed)
            {
                await Task.Delay(due - clock.Elapsed, cancellationToken);
            }

            try
            {
                var handoff = await contender.HandOffAsync(i + 2, cancellationToken);
                handoffs.Add(handoff);
                progress.Handoff(handoff, driver);
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                problems.Add($"handoff to v{i + 2} failed: {e.Message.Split('\n')[0]}");
                break;
            }
        }

        progress.EndHandoffs();
        LoadResult? driverResult = null;
        WrkResult? wrkResult = null;
        if (driver is not null)
        {
            await Task.Delay(settings.Tail, cancellationToken);
            driverResult = await driver.StopAsync(cancellationToken);
        }
        else
        {
            try
            {
                await wrk!.Exited.WaitAsync(maxLoad - clock.Elapsed + TimeSpan.FromSeconds(30), cancellationToken);
                wrkResult = WrkResult.Parse(wrk.Output);
            }
            catch (Exception e) when (e is TimeoutException or FormatException)
            {
                problems.Add($"wrk gave no result: {e.Message}");
            }
        }

        var (exited, total) = await contender.WaitForRetiredAsync(RetireTimeout, cancellationToken);
        if (kind == ContenderKind.Switchover)
        {
            if (exited < total)
            {
                problems.Add($"{total - exited} of {total} superseded generations had not exited {RetireTimeout.TotalSeconds:0} s after the load stopped");
            }

            foreach (var process in contender.Processes.Where(p => p.HasExited && p.Exited.Result != 0))
            {
                problems.Add($"generation pid {process.Pid} exited with code {process.Exited.Result}" +
                             (process.Exited.Result > 128 ? $" (signal {process.Exited.Result - 128})" : string.Empty) + "; its output is in diagnostics.log");
                diagnostics.Add($"# {kind} / {client} / {Modes.Name(mode)}: pid {process.Pid} exited with code {process.Exited.Result}\n" +
                                $"{process.CommandLine}\n{process.Output}\n");
            }
        }

        var run = new RollingRun(kind, contender.Description, client, mode, loadStarted, handoffs, driverResult, wrkResult, exited, total, problems)
        {
            Notes = notes,
            Diagnostics = diagnostics,
        };
        var remarks = string.Concat(
            problems.Count > 0 ? "; problems: " + string.Join("; ", problems) : string.Empty,
            notes.Count > 0 ? "; " + string.Join("; ", notes) : string.Empty);
        progress.Line(string.Create(CultureInfo.InvariantCulture,
            $"  {run.Label}: {run.Requests:N0} requests ({run.RequestsPerSecond:N0}/s), {run.Failures:N0} failed, {handoffs.Count} handoffs{remarks}"));
        return run;
    }

    /// <summary>
    /// wrk's fixed duration: the schedule's, or as long as our driver's Switchover run in the same mode took (when its
    /// handoffs were slower than the interval, or it went on for the requests asked for), with room for 20 % fewer
    /// requests per second than our driver saw; plus a second of slack.
    /// </summary>
    private int WrkSeconds(RollingRun? reference)
    {
        var planned = Planned(settings.Handoffs);
        if (reference is { Handoffs.Count: > 0 })
        {
            var last = reference.Handoffs[^1];
            var actual = last.StartedUtc + last.Took - reference.LoadStartedUtc + settings.Tail;
            planned = actual > planned ? actual : planned;
        }

        if (settings.MinRequests > 0 && reference is { RequestsPerSecond: > 0 } && settings.MinRequests / reference.RequestsPerSecond * 1.2 > planned.TotalSeconds)
        {
            planned = TimeSpan.FromSeconds(settings.MinRequests / reference.RequestsPerSecond * 1.2);
        }

        return (int)Math.Ceiling(planned.TotalSeconds + 1);
    }

    /// <summary>How long the load of a run with <paramref name="handoffs"/> on schedule lasts.</summary>
    private TimeSpan Planned(int handoffs) => settings.Lead + (settings.Interval * handoffs) + settings.Tail;
}
