using System.Globalization;
using System.Net;
using Switchover.Lab;
using Switchover.Load.Clients;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>How the app is reached in the overhead scenario.</summary>
internal enum OverheadVariant
{
    /// <summary>Bound to the port itself, no nftables table in the namespace: the kernel does no connection tracking.</summary>
    Direct,

    /// <summary>Bound to the port itself, plus a table with one <c>ct state</c> rule: every packet goes through conntrack, nothing is NATed.</summary>
    DirectWithConntrack,

    /// <summary>Behind Switchover's default steering (TPROXY): conntrack, the SYN-only prerouting chain, no NAT.</summary>
    Switchover,

    /// <summary>Behind Switchover with <c>Steering=Redirect</c>: conntrack, NAT and the SYN-only guard.</summary>
    SwitchoverRedirect,

    /// <summary>
    /// Bound to another port, reached through a BPF <c>sk_lookup</c> program (<see cref="SkLookupSteering"/>): no
    /// nftables table, no conntrack, no NAT. A prototype measured here, not a steering mode of the product.
    /// </summary>
    SkLookup,
}

/// <summary>One measured round: one variant, one client, one mode.</summary>
internal sealed record OverheadRound(
    OverheadVariant Variant,
    ClientKind Client,
    ConnectionMode Mode,
    int Round,
    long Requests,
    long Failures,
    TimeSpan Duration,
    CpuSample Cpu,
    LoadResult? Driver,
    WrkResult? Wrk)
{
    public double RequestsPerSecond => Duration > TimeSpan.Zero ? Requests / Duration.TotalSeconds : 0;
}

/// <summary>
/// Steady-state throughput and latency of the same app bound directly and behind the Switchover redirect, in the same run:
/// three labs side by side (direct, direct with conntrack, Switchover), measured in alternating rounds so that drift on a
/// shared machine hits every variant alike. The conntrack variant splits the cost of the redirect into connection
/// tracking (paid by any NAT) and the NAT and filter rules themselves.
/// </summary>
internal sealed class OverheadScenario(SuiteSettings settings, Progress progress)
{
    private const int Port = 8080;

    /// <summary>Where the app listens in the <see cref="OverheadVariant.SkLookup"/> variant (the program steers Port to it).</summary>
    private const int ListenerPort = 8081;

    private readonly List<ChainProfile> _profiles = [];

    /// <summary>One profiled round per variant, client and mode, after the measured ones (perf costs CPU: never in them).</summary>
    public IReadOnlyList<ChainProfile> Profiles => _profiles;

    /// <summary>Why there is no profile, when perf could not be used.</summary>
    public string? ProfileProblem { get; private set; }

    public async Task<IReadOnlyList<OverheadRound>> RunAsync(CancellationToken cancellationToken)
    {
        var hosts = new List<Host>();
        try
        {
            foreach (var variant in Enum.GetValues<OverheadVariant>())
            {
                hosts.Add(await Host.StartAsync(variant, cancellationToken));
            }

            progress.Line($"overhead: {string.Join(", ", hosts.Select(h => $"{h.Variant} in {h.Lab.Server.Name} (pid {h.ServerPid})"))}");
            var rounds = new List<OverheadRound>();
            foreach (var client in settings.OverheadClients.Where(settings.Clients.Contains))
            {
                foreach (var mode in settings.Modes)
                {
                    // Warm-up: JIT, connection pools and caches, discarded.
                    foreach (var host in hosts)
                    {
                        await MeasureAsync(host, client, mode, 0, TimeSpan.FromSeconds(settings.Quick ? 0.5 : 1), cancellationToken);
                    }

                    for (var round = 1; round <= settings.OverheadRounds; round++)
                    {
                        // Rotate the order each round: no variant always goes first (or always right after another).
                        for (var k = 0; k < hosts.Count; k++)
                        {
                            var host = hosts[(k + round) % hosts.Count];
                            rounds.Add(await MeasureAsync(host, client, mode, round, settings.OverheadRoundDuration, cancellationToken));
                        }
                    }

                    if (settings.OverheadProfile)
                    {
                        await ProfileAsync(hosts, client, mode, cancellationToken);
                    }

                    var line = string.Join(", ", hosts.Select(h =>
                    {
                        var mine = rounds.Where(r => r.Variant == h.Variant && r.Client == client && r.Mode == mode).ToList();
                        return string.Create(CultureInfo.InvariantCulture,
                            $"{h.Variant} {mine.Sum(r => r.Requests) / mine.Sum(r => r.Duration.TotalSeconds):N0}/s");
                    }));
                    progress.Line($"  overhead {client} / {Modes.Name(mode)}: {line}");
                }
            }

            return rounds;
        }
        finally
        {
            foreach (var host in hosts)
            {
                await host.DisposeAsync();
            }
        }
    }

    private async Task ProfileAsync(List<Host> hosts, ClientKind client, ConnectionMode mode, CancellationToken cancellationToken)
    {
        foreach (var host in hosts)
        {
            if (ProfileProblem is not null)
            {
                return;
            }

            var (profile, why) = await ChainProfile.MeasureAsync(host.Variant, client, mode, settings.OverheadRoundDuration,
                () => MeasureAsync(host, client, mode, -1, settings.OverheadRoundDuration, cancellationToken), cancellationToken);
            if (profile is null)
            {
                ProfileProblem = why;
                progress.Line($"  overhead: NO CPU PROFILE of the chains: {why}");
                return;
            }

            _profiles.Add(profile);
        }

        progress.Line("  overhead profile (share of busy CPU in nftables chains, the same without their socket lookups / socket lookups / conntrack): " + string.Join(", ",
            _profiles.Where(p => p.Client == client && p.Mode == mode).Select(p => string.Create(CultureInfo.InvariantCulture,
                $"{p.Variant} {p.ChainsPercent:0.00} %, {p.ChainsWithoutLookupsPercent:0.00} % / {p.LookupsPercent:0.00} % / {p.ConntrackPercent:0.00} %"))));
    }

    private async Task<OverheadRound> MeasureAsync(Host host, ClientKind client, ConnectionMode mode, int round, TimeSpan duration, CancellationToken cancellationToken)
    {
        var before = CpuSample.Take(host.ServerPid);
        if (client == ClientKind.Driver)
        {
            var perTarget = Math.Max(1, settings.Concurrency / 2);
            var result = await HttpLoad.RunAsync(
                [
                    new LoadTarget(host.Lab.Client, new IPEndPoint(host.Lab.ServerV4, Port), "net-v4"),
                    new LoadTarget(host.Lab.Client, new IPEndPoint(host.Lab.ServerV6, Port), "net-v6"),
                ],
                new LoadOptions
                {
                    Mode = mode,
                    Concurrency = perTarget,
                    MaxDuration = duration,
                    MaxRequests = long.MaxValue,
                    BodyValidator = static body => body.StartsWith("v1 ", StringComparison.Ordinal),
                },
                cancellationToken);
            var cpu = CpuSample.Take(host.ServerPid) - before;
            return new OverheadRound(host.Variant, client, mode, round, result.TotalRequests, result.FailureCount + result.StaleConnectionsDiscarded,
                result.Duration, cpu, result, null);
        }

        var seconds = Math.Max(1, (int)Math.Round(duration.TotalSeconds));
        await using var wrk = Wrk.Start(host.Lab.Client, new IPEndPoint(host.Lab.ServerV4, Port), settings.Concurrency, seconds,
            mode == ConnectionMode.NewConnectionPerRequest);
        await wrk.Exited.WaitAsync(TimeSpan.FromSeconds(seconds + 30), cancellationToken);
        var wrkCpu = CpuSample.Take(host.ServerPid) - before;
        var parsed = WrkResult.Parse(wrk.Output);
        return new OverheadRound(host.Variant, client, mode, round, parsed.Requests, parsed.Failures, parsed.Duration, wrkCpu, null, parsed);
    }

    /// <summary>One lab with the app running in one variant.</summary>
    private sealed class Host : IAsyncDisposable
    {
        private readonly SwitchoverService? _service;
        private readonly LabProcess? _direct;

        private SkLookupSteering? SkLookupProgram { get; init; }

        private Host(OverheadVariant variant, TwoHostLab lab, int serverPid, SwitchoverService? service, LabProcess? direct)
        {
            Variant = variant;
            Lab = lab;
            ServerPid = serverPid;
            _service = service;
            _direct = direct;
        }

        public OverheadVariant Variant { get; }

        public TwoHostLab Lab { get; }

        public int ServerPid { get; }

        public static async Task<Host> StartAsync(OverheadVariant variant, CancellationToken cancellationToken)
        {
            var lab = await Labs.CreateAsync(cancellationToken);
            try
            {
                if (variant is OverheadVariant.Switchover or OverheadVariant.SwitchoverRedirect)
                {
                    var service = new SwitchoverService(lab.Server, Artifacts.EchoServer, Port);
                    try
                    {
                        string[] steering = [$"--Switchover:Steering={(variant == OverheadVariant.Switchover ? Steering.Tproxy : Steering.Redirect)}"];
                        var generation = await service.DeployAsync("v1", TimeSpan.FromSeconds(60), cancellationToken, steering);
                        return new Host(variant, lab, generation.Process.Pid, service, null);
                    }
                    catch
                    {
                        await service.DisposeAsync();
                        throw;
                    }
                }

                if (variant == OverheadVariant.DirectWithConntrack)
                {
                    // Our own table in the lab's namespace (deleted with it): one ct expression turns tracking on for the namespace.
                    await lab.Server.RunAsync("nft", ["add", "table", "inet", "load_conntrack"], cancellationToken);
                    await lab.Server.RunAsync("nft", ["add", "chain", "inet", "load_conntrack", "input", "{ type filter hook input priority 0; policy accept; }"], cancellationToken);
                    await lab.Server.RunAsync("nft", ["add", "rule", "inet", "load_conntrack", "input", "ct", "state", "established,related", "accept"], cancellationToken);
                }

                var app = Artifacts.EchoServer;
                var port = variant == OverheadVariant.SkLookup ? ListenerPort : Port;
                var process = lab.Server.StartProcess("dotnet",
                [
                    app, "--urls", $"http://[::]:{port.ToString(CultureInfo.InvariantCulture)}", "--Switchover:Mode=Disabled", "--Text=v1",
                    "--contentRoot", Path.GetDirectoryName(app)!,
                ]);
                await process.WaitForOutputAsync("Now listening on", TimeSpan.FromSeconds(60), cancellationToken);
                SkLookupSteering? skLookup = null;
                try
                {
                    skLookup = variant == OverheadVariant.SkLookup ? SkLookupSteering.Attach(lab.Server.Name, Port, process.Pid, ListenerPort) : null;
                }
                catch
                {
                    process.SendSignal(Signals.Terminate);
                    await process.Exited.WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
                    await process.DisposeAsync();
                    throw;
                }

                return new Host(variant, lab, process.Pid, null, process) { SkLookupProgram = skLookup };
            }
            catch
            {
                await lab.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            SkLookupProgram?.Dispose();
            if (_direct is not null)
            {
                if (!_direct.HasExited)
                {
                    _direct.SendSignal(Signals.Terminate);
                }

                try
                {
                    await _direct.Exited.WaitAsync(TimeSpan.FromSeconds(30));
                }
                catch (TimeoutException)
                {
                    // Killed with the namespace below.
                }

                await _direct.DisposeAsync();
            }

            if (_service is not null)
            {
                await _service.DisposeAsync();
            }

            await Lab.DisposeAsync();
        }
    }
}
