using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>One handoff of the timing scenario.</summary>
/// <param name="FirstServed">From the launch of the new binary until the probe first got an answer from it.</param>
/// <param name="IdleHeld">Idle connections held on the old generation during this handoff (0: none).</param>
/// <param name="OldExited">From the launch until the superseded generation had exited (idle handoffs only).</param>
/// <param name="OldDrain">The superseded generation's drain, as it logged it (idle handoffs only).</param>
internal sealed record TimedHandoff(
    int Version,
    DateTime LaunchedUtc,
    TimeSpan LaunchToServing,
    TimeSpan? RuleTransaction,
    TimeSpan? FirstServed,
    int IdleHeld,
    TimeSpan? OldExited = null,
    TimeSpan? OldDrain = null,
    IdleFates? Fates = null);

internal sealed record TimingResult(IReadOnlyList<TimedHandoff> Handoffs, LoadResult Probe, IReadOnlyList<string> Problems);

/// <summary>
/// Handoff timing without load: swaps one after another while a probe (a new connection every millisecond from the client
/// namespace) notes when each new version first answers; then swaps with thousands of idle connections held open on the
/// old generation, which also shows how long it takes to drain and exit with them, and how they end.
/// </summary>
internal sealed partial class TimingScenario(SuiteSettings settings, Progress progress)
{
    private const int Port = 8080;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    // The idle swaps measure how long the drain's polling takes with 10,000 connections open, and how those end when the
    // generation goes; under the default policy (WaitForClient) the old generation would wait out Kestrel's keep-alive
    // timeout for clients that never come back. That cost is the drain scenario's (DrainScenario); here, the old policy.
    private static readonly string[] Policy = ["--Switchover:Drain:IdleConnections=CloseAfterQuiet"];

    public async Task<TimingResult> RunAsync(CancellationToken cancellationToken)
    {
        await using var lab = await Labs.CreateAsync(cancellationToken);
        await using var service = new SwitchoverService(lab.Server, Artifacts.EchoServer, Port);
        var current = await service.DeployAsync("v1", Timeout, cancellationToken, Policy);
        progress.Line($"timing: lab {lab.Server.Name} <-> {lab.Client.Name}, Switchover namespace {service.Name}; {settings.TimingSwaps} swaps, " +
                      $"then {settings.IdleSwaps} with {settings.IdleConnections:N0} idle connections");
        var v4 = new IPEndPoint(lab.ServerV4, Port);
        var v6 = new IPEndPoint(lab.ServerV6, Port);
        await using var probe = HttpLoad.Start(
            [new LoadTarget(lab.Client, v4, "probe-v4")],
            new LoadOptions
            {
                Mode = ConnectionMode.NewConnectionPerRequest,
                Concurrency = 1,
                RequestsPerSecond = 1000,
                MaxDuration = settings.MaxSuiteDuration,
                MaxRequests = long.MaxValue,
                BodyValidator = static body => body.Length > 3 && body[0] == 'v',
            },
            cancellationToken);

        var handoffs = new List<TimedHandoff>();
        var problems = new List<string>();
        var version = 1;
        for (var i = 0; i < settings.TimingSwaps; i++)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(300), cancellationToken);
            var launched = DateTime.UtcNow;
            current = await service.DeployAsync($"v{++version}", Timeout, cancellationToken, Policy);
            handoffs.Add(new TimedHandoff(version, launched, current.LaunchToServing, current.RuleTransaction, null, 0));
            progress.Handoff(new Contenders.HandoffRecord(version, launched, launched, DateTime.UtcNow - launched), probe);
        }

        progress.EndHandoffs();
        for (var i = 0; i < settings.IdleSwaps && settings.IdleConnections > 0; i++)
        {
            var old = current;
            await using var idle = await IdleConnections.OpenAsync(lab.Client, [v4, v6], settings.IdleConnections, 64, cancellationToken);
            var onOld = idle.AnsweredBy.GetValueOrDefault($"v{version}");
            if (idle.Failures.Count > 0)
            {
                // Over the public port with one generation serving steadily, nothing should fail: keep what conntrack
                // says about the client ports that did, it shows where their SYN was sent.
                problems.Add($"{idle.Failures.Count} of {settings.IdleConnections:N0} idle connections to v{version} could not be opened: " +
                             string.Join("; ", idle.Failures.Take(5)));
                var conntrack = await lab.Server.TryRunAsync("conntrack", ["-L", "-p", "tcp", "--orig-port-dst", Port.ToString(CultureInfo.InvariantCulture)], cancellationToken);
                var ports = idle.Failures.Take(5).Select(f => f.Split(' ')[0]).Select(e => e[(e.LastIndexOf(':') + 1)..]).ToHashSet(StringComparer.Ordinal);
                var lines = conntrack.StandardOutput.Split('\n').Where(l => ports.Any(p => l.Contains($"sport={p} ", StringComparison.Ordinal))).Take(10);
                problems.Add("conntrack entries of those client ports: " + string.Join(" | ", lines));
                progress.Line("  " + problems[^2]);
                progress.Line("  " + problems[^1]);
            }

            var launched = DateTime.UtcNow;
            current = await service.DeployAsync($"v{++version}", Timeout, cancellationToken, Policy);
            TimeSpan? exited = null;
            try
            {
                await old.Process.Exited.WaitAsync(Timeout, cancellationToken);
                exited = DateTime.UtcNow - launched;
            }
            catch (TimeoutException)
            {
                problems.Add($"v{version - 1} had not exited {Timeout.TotalSeconds:0} s after v{version} took over from it with {idle.Count:N0} idle connections");
            }

            var fates = idle.Survey();
            var drain = Drained().Match(old.Process.Output);
            var handoff = new TimedHandoff(version, launched, current.LaunchToServing, current.RuleTransaction, null, onOld, exited,
                drain.Success ? TimeSpan.FromMilliseconds(double.Parse(drain.Groups[1].Value, CultureInfo.InvariantCulture)) : null, fates);
            handoffs.Add(handoff);
            progress.Line(string.Create(CultureInfo.InvariantCulture,
                $"  v{version} took over with {onOld:N0} idle connections on v{version - 1}: rule transaction {handoff.RuleTransaction?.TotalMilliseconds:0.0} ms, " +
                $"launch to serving {handoff.LaunchToServing.TotalMilliseconds:0} ms; v{version - 1} drained in {handoff.OldDrain?.TotalMilliseconds:0} ms, " +
                $"exited {exited?.TotalSeconds:0.0} s after the launch; idle connections: {fates.ClosedGracefully} closed (FIN), {fates.Reset} reset, " +
                $"{fates.StillOpen} open, {fates.UnexpectedData} with unexpected data"));
        }

        await Task.Delay(TimeSpan.FromMilliseconds(300), cancellationToken);
        var probeResult = await probe.StopAsync(cancellationToken);
        var timed = handoffs.Select(h => h with { FirstServed = FirstSeen(probeResult, h) }).ToList();
        return new TimingResult(timed, probeResult, problems);
    }

    private static TimeSpan? FirstSeen(LoadResult probe, TimedHandoff handoff)
    {
        var prefix = $"v{handoff.Version} ";
        var seen = probe.Bodies.Where(b => b.Key.StartsWith(prefix, StringComparison.Ordinal)).Select(b => b.Value.FirstSeenUtc).ToList();
        return seen.Count > 0 ? seen.Min() - handoff.LaunchedUtc : null;
    }

    [GeneratedRegex(@"drained in (\d+) ms")]
    private static partial Regex Drained();
}
