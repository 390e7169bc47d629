using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Switchover.Lab;
using Switchover.Load.Report;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>One superseded generation of the drain scenario.</summary>
/// <param name="Lived">From its successor's takeover until it exited; null if it had not exited by the scenario's bound.</param>
/// <param name="RssAtTakeoverKb">Its resident memory when its successor took over.</param>
/// <param name="RssMegabyteSeconds">Its resident memory integrated over the time it lived on after the takeover.</param>
internal sealed record DrainedGeneration(int Version, int Pid, TimeSpan? Lived, long RssAtTakeoverKb, long PeakRssKb, double RssMegabyteSeconds, TimeSpan? Drain);

/// <summary>One policy's run: the clients' outcome and what the superseded generations cost.</summary>
/// <param name="Abandoned">Idle connections opened on each generation and never used again (clients that went away without closing).</param>
/// <param name="Fates">How the abandoned connections had ended once every superseded generation had exited.</param>
internal sealed record DrainPolicyRun(
    string Policy,
    TimeSpan KeepAlive,
    int Abandoned,
    LoadResult Returning,
    IReadOnlyList<DrainedGeneration> Superseded,
    int PeakGenerations,
    long PeakTotalRssKb,
    IdleFates Fates,
    IReadOnlyList<string> Problems);

/// <summary>
/// What the idle-connection policy of the drain costs. For each policy (WaitForClient, the default, then
/// CloseAfterQuiet): a lab with clients that reuse their connections without checking them and idle 0 to 3 s between
/// requests (our driver with the probe off, as Python's http.client), plus, on every generation, idle connections
/// whose clients never come back; a few handoffs; then it waits until every superseded generation has exited.
/// Reported: the returning clients' failures, how long each superseded generation lived on after the takeover, its
/// resident memory (at the takeover, peak, and integrated over that time), and the most generations (and their total
/// memory) alive at once. The server is tests/Switchover.TestServer, which binds Kestrel:Limits from its configuration,
/// so the keep-alive timeout can be shortened (<c>--drain-keepalive</c>); without it, Kestrel's default (130 s) applies.
/// </summary>
internal sealed partial class DrainScenario(SuiteSettings settings, Progress progress)
{
    private const int Port = 8080;
    private static readonly TimeSpan DeployTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan Sample = TimeSpan.FromMilliseconds(250);

    public async Task<IReadOnlyList<DrainPolicyRun>> RunAsync(CancellationToken cancellationToken)
    {
        var runs = new List<DrainPolicyRun>();
        foreach (var policy in new[] { "WaitForClient", "CloseAfterQuiet" })
        {
            runs.Add(await RunPolicyAsync(policy, cancellationToken));
        }

        return runs;
    }

    private async Task<DrainPolicyRun> RunPolicyAsync(string policy, CancellationToken cancellationToken)
    {
        await using var lab = await Labs.CreateAsync(cancellationToken);
        await using var service = new SwitchoverService(lab.Server, Artifacts.TestServer, Port);
        var keepAlive = settings.DrainKeepAlive ?? TimeSpan.FromSeconds(130);
        string[] arguments =
        [
            $"--Switchover:Drain:IdleConnections={policy}",
            .. settings.DrainKeepAlive is { } k ? [$"--Kestrel:Limits:KeepAliveTimeout={k.ToString("c", CultureInfo.InvariantCulture)}"] : Array.Empty<string>(),
        ];
        progress.Line(Inv($"drain: {policy}, keep-alive timeout {keepAlive.TotalSeconds:0} s, {settings.DrainHandoffs} handoffs, {settings.DrainReturningClients} returning clients, ") +
                      Inv($"{settings.DrainAbandoned} abandoned idle connections per generation; lab {lab.Server.Name} <-> {lab.Client.Name}"));
        var v4 = new IPEndPoint(lab.ServerV4, Port);
        var v6 = new IPEndPoint(lab.ServerV6, Port);
        var current = await service.DeployAsync("v1", DeployTimeout, cancellationToken, arguments);
        await using var returning = HttpLoad.Start(
            [new LoadTarget(lab.Client, v4, "returning-v4"), new LoadTarget(lab.Client, v6, "returning-v6")],
            new LoadOptions
            {
                Concurrency = Math.Max(1, settings.DrainReturningClients / 2),
                ProbeBeforeReuse = false,
                MaxIdleBetweenRequests = TimeSpan.FromSeconds(3),
                Seed = 9,
                MaxDuration = settings.MaxSuiteDuration,
                MaxRequests = long.MaxValue,
                BodyValidator = static body => body.Length > 3 && body[0] == 'v',
            },
            cancellationToken);

        using var sampling = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var meter = new MemoryMeter(service);
        var sampler = meter.RunAsync(Sample, sampling.Token);
        var abandoned = new List<IdleConnections>();
        var superseded = new List<(LaunchedGeneration Generation, DateTime TakenOverUtc, Task<DateTime> ExitedUtc)>();
        var problems = new List<string>();
        try
        {
            for (var version = 2; version <= settings.DrainHandoffs + 1; version++)
            {
                var idle = await IdleConnections.OpenAsync(lab.Client, [v4, v6], settings.DrainAbandoned, Math.Clamp(settings.DrainAbandoned, 1, 32), cancellationToken);
                abandoned.Add(idle);
                problems.AddRange(idle.Failures.Take(3).Select(f => "abandoned connection not opened: " + f));
                await Task.Delay(settings.Interval, cancellationToken);
                var next = await service.DeployAsync($"v{version}", DeployTimeout, cancellationToken, arguments);
                var old = current;
                meter.Superseded(old.Process.Pid);
                superseded.Add((old, DateTime.UtcNow, old.Process.Exited.ContinueWith(_ => DateTime.UtcNow, TaskScheduler.Default)));
                current = next;
            }

            // Every superseded generation exits at the latest a drain bound after its takeover (keep-alive + 10 s by default).
            var bound = keepAlive + TimeSpan.FromSeconds(40);
            try
            {
                await Task.WhenAll(superseded.Select(s => s.ExitedUtc)).WaitAsync(bound, cancellationToken);
            }
            catch (TimeoutException)
            {
                problems.Add(Inv($"not every superseded generation had exited {bound.TotalSeconds:0} s after the last takeover"));
            }
        }
        finally
        {
            await sampling.CancelAsync();
            await sampler;
        }

        var result = await returning.StopAsync(cancellationToken);
        var fates = new IdleFates(0, 0, 0, 0);
        foreach (var idle in abandoned)
        {
            var f = idle.Survey();
            fates = new IdleFates(fates.ClosedGracefully + f.ClosedGracefully, fates.Reset + f.Reset, fates.StillOpen + f.StillOpen, fates.UnexpectedData + f.UnexpectedData);
            await idle.DisposeAsync();
        }

        var generations = superseded.Select(s =>
        {
            var pid = s.Generation.Process.Pid;
            var drain = Drained().Match(s.Generation.Process.Output);
            return new DrainedGeneration(
                int.Parse(s.Generation.Text.AsSpan(1), CultureInfo.InvariantCulture), pid,
                s.ExitedUtc.IsCompletedSuccessfully ? s.ExitedUtc.Result - s.TakenOverUtc : null,
                meter.AtTakeoverKb(pid), meter.PeakKb(pid), meter.MegabyteSeconds(pid),
                drain.Success ? TimeSpan.FromMilliseconds(double.Parse(drain.Groups[1].Value, CultureInfo.InvariantCulture)) : null);
        }).ToList();
        var run = new DrainPolicyRun(policy, keepAlive, settings.DrainAbandoned, result, generations, meter.PeakGenerations, meter.PeakTotalKb, fates, problems);
        progress.Line(Inv($"  {policy}: returning clients {result.TotalRequests} requests, {result.FailureCount} failed; superseded generations lived ") +
                      string.Join(", ", generations.Select(g => g.Lived is { } l ? Inv($"{l.TotalSeconds:0.0} s") : "(not exited)")) +
                      Inv($"; RSS at takeover {Median(generations.Select(g => g.RssAtTakeoverKb / 1024.0)):0} MB, {Median(generations.Select(g => g.RssMegabyteSeconds)):0} MB*s each; ") +
                      Inv($"at most {run.PeakGenerations} generations ({run.PeakTotalRssKb / 1024.0:0} MB) alive at once; abandoned connections: {fates.ClosedGracefully} closed (FIN), {fates.Reset} reset, {fates.StillOpen} open"));
        return run;
    }

    /// <summary>The drain section of the report.</summary>
    public static void Render(StringBuilder md, IReadOnlyList<DrainPolicyRun> runs)
    {
        if (runs.Count == 0)
        {
            return;
        }

        md.AppendLine("## Drain: what waiting for idle clients costs").AppendLine()
            .AppendLine(Inv($"Returning clients reuse their connections without checking them (our driver with the probe off, as Python's http.client) and idle 0 to 3 s between requests; ") +
                        Inv($"{runs[0].Abandoned} more idle connections per generation are never used again. Lived: from the successor's takeover to the exit. ") +
                        "RSS MB*s: the superseded generation's resident memory integrated over that time.")
            .AppendLine()
            .AppendLine("| policy | keep-alive | returning clients: requests / failed | superseded | lived p50 / max | drain p50 | RSS at takeover (median) | peak RSS (max) | RSS MB*s (median) | most generations alive | their RSS | abandoned: FIN / reset / open |")
            .AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var run in runs)
        {
            var lived = run.Superseded.Where(g => g.Lived is not null).Select(g => g.Lived!.Value.TotalSeconds).ToList();
            md.AppendLine(Inv($"| {run.Policy} | {run.KeepAlive.TotalSeconds:0} s | {run.Returning.TotalRequests:N0} / {run.Returning.FailureCount:N0} | {run.Superseded.Count} | ") +
                          Inv($"{Median(lived):0.0} s / {(lived.Count > 0 ? lived.Max() : double.NaN):0.0} s | {Median(run.Superseded.Where(g => g.Drain is not null).Select(g => g.Drain!.Value.TotalSeconds)):0.0} s | ") +
                          Inv($"{Median(run.Superseded.Select(g => g.RssAtTakeoverKb / 1024.0)):0} MB | {run.Superseded.Select(g => g.PeakRssKb).DefaultIfEmpty().Max() / 1024.0:0} MB | ") +
                          Inv($"{Median(run.Superseded.Select(g => g.RssMegabyteSeconds)):0} | {run.PeakGenerations} | {run.PeakTotalRssKb / 1024.0:0} MB | ") +
                          Inv($"{run.Fates.ClosedGracefully} / {run.Fates.Reset} / {run.Fates.StillOpen} |"));
        }

        foreach (var problem in runs.SelectMany(r => r.Problems.Select(p => $"{r.Policy}: {p}")))
        {
            md.AppendLine().Append("- ").AppendLine(problem);
        }

        md.AppendLine();
    }

    private static double Median(IEnumerable<double> values) => Stats.Percentile(values, 50) ?? double.NaN;

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    [GeneratedRegex(@"drained in (\d+) ms")]
    private static partial Regex Drained();

    /// <summary>Samples the resident memory of every generation of a service while the scenario runs.</summary>
    private sealed class MemoryMeter(SwitchoverService service)
    {
        private readonly Lock _lock = new();
        private readonly Dictionary<int, long> _peak = [];
        private readonly Dictionary<int, long> _last = [];
        private readonly Dictionary<int, long> _atTakeover = [];
        private readonly Dictionary<int, double> _megabyteSeconds = [];
        private readonly HashSet<int> _superseded = [];

        public int PeakGenerations { get; private set; }

        public long PeakTotalKb { get; private set; }

        public void Superseded(int pid)
        {
            lock (_lock)
            {
                _superseded.Add(pid);
                _atTakeover[pid] = _last.GetValueOrDefault(pid);
            }
        }

        public long AtTakeoverKb(int pid)
        {
            lock (_lock)
            {
                return _atTakeover.GetValueOrDefault(pid);
            }
        }

        public long PeakKb(int pid)
        {
            lock (_lock)
            {
                return _peak.GetValueOrDefault(pid);
            }
        }

        public double MegabyteSeconds(int pid)
        {
            lock (_lock)
            {
                return _megabyteSeconds.GetValueOrDefault(pid);
            }
        }

        public async Task RunAsync(TimeSpan interval, CancellationToken cancellationToken)
        {
            using var timer = new PeriodicTimer(interval);
            try
            {
                do
                {
                    var alive = service.Processes.Where(p => !p.HasExited).Select(p => (p.Pid, Kb: ResidentKb(p.Pid))).Where(p => p.Kb > 0).ToList();
                    lock (_lock)
                    {
                        foreach (var (pid, kb) in alive)
                        {
                            _last[pid] = kb;
                            _peak[pid] = Math.Max(_peak.GetValueOrDefault(pid), kb);
                            if (_superseded.Contains(pid))
                            {
                                _megabyteSeconds[pid] = _megabyteSeconds.GetValueOrDefault(pid) + (kb / 1024.0 * interval.TotalSeconds);
                            }
                        }

                        PeakGenerations = Math.Max(PeakGenerations, alive.Count);
                        PeakTotalKb = Math.Max(PeakTotalKb, alive.Sum(p => p.Kb));
                    }
                }
                while (await timer.WaitForNextTickAsync(cancellationToken));
            }
            catch (OperationCanceledException)
            {
                // The scenario is done.
            }
        }

        /// <summary>VmRSS of a process in kB (the kernel's own accounting, /proc/PID/status); 0 once it is gone.</summary>
        private static long ResidentKb(int pid)
        {
            try
            {
                foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                {
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    {
                        return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // Exited between the check and the read.
            }

            return 0;
        }
    }
}
