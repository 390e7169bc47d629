using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Switchover.Lab;
using Switchover.Load.Native;
using Switchover.Load.Report;
using Switchover.Load.Suite;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.Sockets;
using Switchover.State;

namespace Switchover.Load.Scenarios;

/// <summary>Percentiles of one series of durations, in milliseconds, and of the CPU time they took when it was measured.</summary>
internal sealed record Timings(string Label, int Count, double P50, double P99, double Max)
{
    public double? CpuP50 { get; init; }

    public double? CpuP99 { get; init; }

    public static Timings Of(string label, IReadOnlyCollection<double> ms, IReadOnlyCollection<double>? cpu = null) =>
        new(label, ms.Count, Stats.Percentile(ms, 50) ?? 0, Stats.Percentile(ms, 99) ?? 0, Stats.Max(ms) ?? 0)
        {
            CpuP50 = cpu is null ? null : Stats.Percentile(cpu, 50),
            CpuP99 = cpu is null ? null : Stats.Percentile(cpu, 99),
        };
}

/// <summary>Programs a generation pair started during one handoff and drain, counted by strace.</summary>
internal sealed record ExecCount(string Configuration, int NewGeneration, int OldGeneration, IReadOnlyDictionary<string, int> Programs);

/// <summary>What one drain poll costs with <paramref name="Idle"/> idle connections on the generation: CPU (thread + children) and wall time.</summary>
internal sealed record PollCost(int Idle, string Method, int Polls, double CpuMedianMs, double CpuMaxMs, double WallMedianMs);

/// <summary>A handoff away from a generation that holds idle connections.</summary>
/// <param name="Fates">The idle connections after the old generation's quiet period, before their clients close them.</param>
/// <param name="ExitedAfterLastCloseSeconds">From the clients closing every idle connection to the old generation's exit.</param>
internal sealed record IdleHandoff(int Idle, int HeldOnOld, double LaunchToServingMs, double? DrainMs, double? ExitedSeconds, IdleFates Fates,
    double? ExitedAfterLastCloseSeconds);

internal sealed record MemorySample(string Variant, int Round, double RssMb);

/// <summary>
/// One launch: from the suite starting the process until a client first got an answer from it (on the public port for
/// Switchover, from the new version; on its own port for Mode=Disabled), and the generation's own waterfall (ms after
/// its process started: host built, Kestrel bound, checks, registered, ready, took over, and the rule transaction).
/// </summary>
internal sealed record LaunchSample(string Variant, int Round, double FirstAnswerMs, IReadOnlyList<double>? Waterfall);

internal sealed record KernelResult(
    IReadOnlyList<Timings> Transactions,
    IReadOnlyList<ExecCount> Execs,
    IReadOnlyList<PollCost> Polls,
    IReadOnlyList<IdleHandoff> IdleHandoffs,
    double? PlainLaunchToServingMs,
    IReadOnlyList<MemorySample> Memory,
    IReadOnlyList<LaunchSample> Launches,
    long LoadRequests,
    long LoadFailures,
    IReadOnlyList<string> Problems,
    IReadOnlyList<string> Notes);

/// <summary>
/// The handoff's kernel work, each piece against the way Switchover did it before, in the same run and lab:
/// rule transactions through our own nf_tables netlink batches, libnftables and the nft program (no load, then under rolling deploys with load);
/// programs started by a generation pair during a handoff (strace); one drain poll's cost with many idle connections
/// (sock_diag + ctnetlink against /proc/net/tcp + conntrack -L) and the handoff and drain with them held; resident memory
/// of a generation against the same app with Mode=Disabled.
/// </summary>
internal sealed partial class KernelScenario(SuiteSettings settings, Progress progress)
{
    private const int Port = 8080;
    private const int DirectPort = 8081;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    /// <summary>How long after a handoff the idle connections are looked at: past the old generation's quiet period (1 s).</summary>
    private static readonly TimeSpan IdleLook = TimeSpan.FromSeconds(2.5);

    /// <summary>The goal for the old generation's exit after its last connection closed: its quiet period (1 s) + 1 s.</summary>
    private static readonly TimeSpan ExitAfterLastClose = TimeSpan.FromSeconds(2);

    private static readonly string[] OldWay = ["--Switchover:NftPath=nft", "--Switchover:ConntrackPath=conntrack"];

    /// <summary>What the programs part counts execs of: the default configuration, then the old way.</summary>
    private static readonly (string Name, string[] Arguments)[] ExecConfigurations =
        [("nf_tables netlink + ctnetlink + sock_diag (default)", []), ("nft and conntrack programs (NftPath, ConntrackPath)", OldWay)];

    private readonly List<string> _problems = [];
    private readonly List<string> _notes = [];
    private int _version;

    public async Task<KernelResult> RunAsync(CancellationToken cancellationToken)
    {
        await using var lab = await Labs.CreateAsync(cancellationToken);
        using var worker = NamespaceWorker.Start(lab.Server.Name);
        var parts = settings.KernelParts;
        progress.Line($"kernel: lab {lab.Server.Name} <-> {lab.Client.Name}; parts {string.Join(", ", SuiteSettings.KernelPartNames.Where(parts.Contains))}; " +
                      $"{settings.KernelTransactions} transactions per transport and phase, " +
                      $"idle connections {string.Join(", ", settings.KernelIdleConnections.Select(n => n.ToString("N0", CultureInfo.InvariantCulture)))}");

        var transactions = new List<Timings>();
        using var libnftables = worker.Run(LibNftablesBackend.OpenHere);
        using var netlink = worker.Run(NfTablesNetlink.OpenHere);
        var bench = new BenchTable(new NftClient(libnftables, netlink), new NftClient(libnftables), new NftClient(CommandRunner.Instance, "nft"), worker);
        if (parts.Contains("transactions"))
        {
            transactions.AddRange(bench.Run("no load", settings.KernelTransactions, TimeSpan.Zero));
            bench.Delete();
            progress.Line("  " + string.Join("; ", transactions.Select(Describe)));
        }

        await using var service = new SwitchoverService(lab.Server, Artifacts.EchoServer, Port);
        var current = await service.DeployAsync(Next(), Timeout, cancellationToken);
        var (loadRequests, loadFailures) = (0L, 0L);
        if (parts.Contains("transactions"))
        {
            var (underLoad, generationLogged, load) = await UnderRollingLoadAsync(lab, service, bench, g => current = g, cancellationToken);
            transactions.AddRange(underLoad);
            transactions.Add(generationLogged);
            bench.Delete();
            (loadRequests, loadFailures) = (load.TotalRequests, load.FailureCount + load.StaleConnectionsDiscarded);
            progress.Line("  under rolling load: " + string.Join("; ", underLoad.Append(generationLogged).Select(Describe)) +
                          $"; load {load.TotalRequests:N0} requests, {loadFailures} failed");
            if (loadFailures > 0)
            {
                _problems.Add($"{loadFailures} requests failed under the rolling load");
            }
        }

        var execs = new List<ExecCount>();
        foreach (var (name, arguments) in parts.Contains("programs") ? ExecConfigurations : [])
        {
            current = await service.DeployAsync(Next(), Timeout, cancellationToken, arguments);
            var (count, next) = await CountExecsAsync(service, current, name, arguments, cancellationToken);
            current = next;
            execs.Add(count);
            progress.Line($"  programs started during one handoff and drain, {name}: new generation {count.NewGeneration}, old {count.OldGeneration}" +
                          (count.Programs.Count > 0 ? " (" + string.Join(", ", count.Programs.Select(p => $"{p.Value} {p.Key}")) + ")" : string.Empty));
        }

        if (execs.Count > 0 && execs[0].NewGeneration + execs[0].OldGeneration > 0)
        {
            _problems.Add($"the default configuration started {execs[0].NewGeneration + execs[0].OldGeneration} programs during a handoff: " +
                          string.Join(", ", execs[0].Programs.Select(p => $"{p.Value} {p.Key}")));
        }

        // Handoffs without load and without idle connections: what the idle handoffs are compared with.
        var plain = new List<double>();
        var polls = new List<PollCost>();
        var idleHandoffs = new List<IdleHandoff>();
        if (parts.Contains("idle"))
        {
            for (var i = 0; i < 3; i++)
            {
                current = await service.DeployAsync(Next(), Timeout, cancellationToken);
                plain.Add(current.LaunchToServing.TotalMilliseconds);
            }

            var openFiles = ResourceLimits.RaiseOpenFiles(0);
            foreach (var idle in settings.KernelIdleConnections)
            {
                if ((ulong)idle + 5_000 > openFiles)
                {
                    _notes.Add(string.Create(CultureInfo.InvariantCulture,
                        $"{idle:N0} idle connections were not tried: the open-file limit here is {openFiles:N0} and cannot be raised (hard limit), and both this process (the clients) and the server need a descriptor per connection."));
                    progress.Line("  " + _notes[^1]);
                    continue;
                }

                current = await IdleAsync(lab, service, worker, current, idle, polls, idleHandoffs, cancellationToken);
            }
        }

        var launches = parts.Contains("launch") ? await LaunchesAsync(lab, service, cancellationToken) : [];
        var memory = parts.Contains("memory") ? await MemoryAsync(lab, service, cancellationToken) : [];
        return new KernelResult(transactions, execs, polls, idleHandoffs, Stats.Percentile(plain, 50), memory, launches, loadRequests, loadFailures, _problems, _notes);
    }

    private static string Describe(Timings t) =>
        string.Create(CultureInfo.InvariantCulture, $"{t.Label}: p50 {t.P50:0.000} ms, p99 {t.P99:0.000} ms, max {t.Max:0.000} ms (n={t.Count})") +
        (t.CpuP50 is { } cpu ? string.Create(CultureInfo.InvariantCulture, $", CPU p50 {cpu:0.000} ms p99 {t.CpuP99:0.000} ms") : string.Empty);

    private string Next() => $"v{++_version}";

    private async Task<(IReadOnlyList<Timings> Bench, Timings Logged, LoadResult Load)> UnderRollingLoadAsync(
        TwoHostLab lab, SwitchoverService service, BenchTable bench, Action<LaunchedGeneration> setCurrent,
        CancellationToken cancellationToken)
    {
        await using var load = HttpLoad.Start(
            [new LoadTarget(lab.Client, new IPEndPoint(lab.ServerV4, Port), "v4"), new LoadTarget(lab.Client, new IPEndPoint(lab.ServerV6, Port), "v6")],
            new LoadOptions
            {
                Mode = ConnectionMode.KeepAlive,
                Concurrency = settings.Concurrency,
                MaxDuration = TimeSpan.FromMinutes(10),
                MaxRequests = long.MaxValue,
                BodyValidator = static body => body.Length > 3 && body[0] == 'v',
            },
            cancellationToken);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var logged = new List<double>();
        var rolling = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var started = Stopwatch.StartNew();
                var next = await service.DeployAsync(Next(), Timeout, cancellationToken);
                setCurrent(next);
                if (next.RuleTransaction is { } t)
                {
                    logged.Add(t.TotalMilliseconds);
                }

                var wait = settings.Interval - started.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
                }
            }
        }, CancellationToken.None);

        await Task.Delay(settings.Lead, cancellationToken);
        var timings = await Task.Run(() => bench.Run("rolling load", settings.KernelTransactions, TimeSpan.FromMilliseconds(10)), cancellationToken);

        // At least a few handoffs of the product itself under the load, for its own logged transaction times.
        while (logged.Count < 3 && !rolling.IsCompleted)
        {
            await Task.Delay(200, cancellationToken);
        }

        await stop.CancelAsync();
        await rolling;
        await Task.Delay(settings.Tail, cancellationToken);
        var result = await load.StopAsync(cancellationToken);
        return (timings, Timings.Of("generation's own transaction under rolling load (netlink, as it logs it)", logged), result);
    }

    private async Task<(ExecCount Count, LaunchedGeneration Next)> CountExecsAsync(
        SwitchoverService service, LaunchedGeneration old, string name, string[] arguments, CancellationToken cancellationToken)
    {
        var directory = Directory.CreateTempSubdirectory("switchover-strace-").FullName;
        try
        {
            var oldTrace = Path.Combine(directory, "old");
            var newTrace = Path.Combine(directory, "new");
            using var traceOld = StartStrace(old.Process.Pid, oldTrace);
            await Task.Delay(300, cancellationToken);
            var text = Next();
            var process = service.Launch(text, arguments);

            // Attached at once: the generation's first nft or conntrack use comes after its host is built and Kestrel bound.
            using var traceNew = StartStrace(process.Pid, newTrace);
            var line = await process.WaitForOutputAsync("launch to serving", Timeout, cancellationToken);
            await old.Process.Exited.WaitAsync(Timeout, cancellationToken);
            await Task.Delay(500, cancellationToken);
            traceNew.Kill();
            await traceNew.WaitForExitAsync(cancellationToken);
            await traceOld.WaitForExitAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
            var newPrograms = Execs(newTrace, process.Pid);
            var oldPrograms = Execs(oldTrace, old.Process.Pid);
            var programs = newPrograms.Concat(oldPrograms).GroupBy(p => p).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
            var next = new LaunchedGeneration(process, text, TimeSpan.Zero) { TakeoverLine = line };
            return (new ExecCount(name, newPrograms.Count, oldPrograms.Count, programs), next);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static Process StartStrace(int pid, string output)
    {
        var start = new ProcessStartInfo("strace") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in new[] { "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", output, "-p", pid.ToString(CultureInfo.InvariantCulture) })
        {
            start.ArgumentList.Add(argument);
        }

        return Process.Start(start) ?? throw new InvalidOperationException("strace could not be started (apt-get install strace).");
    }

    /// <summary>
    /// The program of each successful execve in an strace -f output file, leaving out the traced process's own (ip netns
    /// exec turning into dotnet is the launch, not a program the generation started).
    /// </summary>
    private static List<string> Execs(string path, int tracedPid) =>
        File.Exists(path)
            ? File.ReadLines(path).Select(l => ExecLine().Match(l))
                .Where(m => m.Success && m.Groups[1].Value != tracedPid.ToString(CultureInfo.InvariantCulture))
                .Select(m => Path.GetFileName(m.Groups[2].Value)).ToList()
            : [];

    [GeneratedRegex("""^(\d+) +execve\("([^"]+)".*\) = 0""")]
    private static partial Regex ExecLine();

    [GeneratedRegex(@"drained in (\d+) ms")]
    private static partial Regex Drained();

    private async Task<LaunchedGeneration> IdleAsync(
        TwoHostLab lab, SwitchoverService service, NamespaceWorker worker, LaunchedGeneration current, int count,
        List<PollCost> polls, List<IdleHandoff> handoffs, CancellationToken cancellationToken)
    {
        var v4 = new IPEndPoint(lab.ServerV4, Port);
        var v6 = new IPEndPoint(lab.ServerV6, Port);
        var record = service.ReadState()?.Generations.SingleOrDefault(g => g.Pid == current.Process.Pid)
            ?? throw new InvalidOperationException($"generation pid {current.Process.Pid} is not in the state file");
        await using var idle = await IdleConnections.OpenAsync(lab.Client, [v4, v6], count, 64, cancellationToken);
        var held = idle.AnsweredBy.GetValueOrDefault(current.Text);
        if (idle.Failures.Count > 0)
        {
            _problems.Add($"{idle.Failures.Count} of {count:N0} idle connections could not be opened: {string.Join("; ", idle.Failures.Take(3))}");
        }

        var ctnetlink = ConntrackClient.Create(null);
        var program = new ConntrackClient(CommandRunner.Instance, "conntrack");
        var ports = record.Ports.Select(p => p.PrivatePort).Distinct().ToList();

        // The drain's own sequence: its first poll reads the generation's half-open entries from the whole table, the
        // later ones look those up again (none, here). A throw-away client first, so that JIT is not measured.
        _ = worker.Run(() => ConntrackClient.Create(null).CountHalfOpenAsync(record, CancellationToken.None).GetAwaiter().GetResult());
        polls.Add(Measure(worker, count, "first poll: sock_diag + ctnetlink half-open dump (now)", 1, () =>
        {
            _ = ports.Select(ListenQueue.Read).ToList();
            _ = ctnetlink.CountHalfOpenAsync(record, CancellationToken.None).GetAwaiter().GetResult();
        }, warm: false));
        polls.Add(Measure(worker, count, "later polls: sock_diag + lookups of the remembered half-open entries (now)", 30, () =>
        {
            _ = ports.Select(ListenQueue.Read).ToList();
            _ = ctnetlink.CountHalfOpenAsync(record, CancellationToken.None).GetAwaiter().GetResult();
        }));
        polls.Add(Measure(worker, count, "sock_diag alone", 30, () => _ = ports.Select(ListenQueue.Read).ToList()));
        polls.Add(Measure(worker, count, "ctnetlink, all of the generation's entries", 10, () =>
            _ = ctnetlink.CountAsync(record, CancellationToken.None).GetAwaiter().GetResult()));
        polls.Add(Measure(worker, count, "/proc/net/tcp* + conntrack -L --mark (before)", 10, () =>
        {
            _ = ports.Select(ProcNetTcp.Read).ToList();
            _ = program.CountAsync(record, CancellationToken.None).GetAwaiter().GetResult();
        }));
        progress.Line("  " + string.Join("; ", polls.Where(p => p.Idle == count).Select(p =>
            string.Create(CultureInfo.InvariantCulture, $"{p.Method}: CPU {p.CpuMedianMs:0.000} ms (max {p.CpuMaxMs:0.000}), wall {p.WallMedianMs:0.000} ms per poll"))) +
            $" with {count:N0} idle connections");

        var launched = DateTime.UtcNow;
        var next = await service.DeployAsync(Next(), Timeout, cancellationToken);

        // Under the default idle policy (WaitForClient) the old generation keeps an idle connection until its client
        // comes back or goes: after its quiet period, what the connections look like, then the clients go away (FIN
        // from each), and the old generation should exit within its quiet period + 1 s of the last one closing.
        await Task.Delay(IdleLook, cancellationToken);
        var fates = idle.Survey();
        await idle.DisposeAsync();
        var closed = DateTime.UtcNow;
        double? exited = null, afterClose = null;
        try
        {
            await current.Process.Exited.WaitAsync(Timeout, cancellationToken);
            exited = (DateTime.UtcNow - launched).TotalSeconds;
            afterClose = (DateTime.UtcNow - closed).TotalSeconds;
        }
        catch (TimeoutException)
        {
            _problems.Add($"{current.Text} had not exited {Timeout.TotalSeconds:0} s after its {count:N0} idle connections closed");
        }

        if (afterClose > ExitAfterLastClose.TotalSeconds)
        {
            _problems.Add(string.Create(CultureInfo.InvariantCulture,
                $"{current.Text} exited {afterClose:0.0} s after its last idle connection closed, over the quiet period + 1 s ({ExitAfterLastClose.TotalSeconds:0} s)"));
        }

        var drain = Drained().Match(current.Process.Output);
        var handoff = new IdleHandoff(count, held, next.LaunchToServing.TotalMilliseconds,
            drain.Success ? double.Parse(drain.Groups[1].Value, CultureInfo.InvariantCulture) : null, exited, fates, afterClose);
        handoffs.Add(handoff);
        if (handoff.Fates.Reset > 0 || handoff.Fates.UnexpectedData > 0)
        {
            _problems.Add($"{handoff.Fates.Reset} idle connections reset, {handoff.Fates.UnexpectedData} got unexpected data when {current.Text} drained");
        }

        progress.Line(string.Create(CultureInfo.InvariantCulture,
            $"  handoff with {held:N0} idle connections on the old generation: launch to serving {handoff.LaunchToServingMs:0} ms, drain {handoff.DrainMs:0} ms, " +
            $"old exited {handoff.ExitedSeconds:0.0} s after the launch and {handoff.ExitedAfterLastCloseSeconds:0.00} s after its clients closed the last idle connection; " +
            $"after its quiet period {handoff.Fates.ClosedGracefully:N0} closed by it (FIN), {handoff.Fates.Reset} reset, {handoff.Fates.StillOpen} open for their clients"));
        return next;
    }

    private static PollCost Measure(NamespaceWorker worker, int idle, string method, int polls, Action poll, bool warm = true)
    {
        var samples = worker.Run(() =>
        {
            if (warm)
            {
                poll(); // JIT, first socket
            }

            var list = new List<(double Cpu, double Wall)>();
            for (var i = 0; i < polls; i++)
            {
                var cpu = CpuClock.Thread() + CpuClock.Children();
                var wall = Stopwatch.StartNew();
                poll();
                list.Add(((CpuClock.Thread() + CpuClock.Children() - cpu).TotalMilliseconds, wall.Elapsed.TotalMilliseconds));
            }

            return list;
        });
        return new PollCost(idle, method, polls, Stats.Percentile(samples.Select(s => s.Cpu), 50) ?? 0, samples.Max(s => s.Cpu),
            Stats.Percentile(samples.Select(s => s.Wall), 50) ?? 0);
    }

    private async Task<IReadOnlyList<LaunchSample>> LaunchesAsync(TwoHostLab lab, SwitchoverService service, CancellationToken cancellationToken)
    {
        var samples = new List<LaunchSample>();
        for (var round = 1; round <= settings.KernelMemoryRounds; round++)
        {
            var text = Next();
            var stopwatch = Stopwatch.StartNew();
            var process = service.Launch(text);
            var first = await FirstAnswerAsync(lab, Port, text + " ", stopwatch, cancellationToken);
            var line = await process.WaitForOutputAsync("Launch waterfall", Timeout, cancellationToken);
            var match = WaterfallLine().Match(line);
            samples.Add(new LaunchSample("Switchover", round, first,
                match.Success ? [.. match.Groups.Values.Skip(1).Select(g => double.Parse(g.Value, CultureInfo.InvariantCulture))] : null));

            var direct = $"d{round.ToString(CultureInfo.InvariantCulture)}";
            stopwatch.Restart();
            var app = lab.Server.StartProcess("dotnet",
            [
                Artifacts.EchoServer, "--urls", $"http://[::]:{DirectPort.ToString(CultureInfo.InvariantCulture)}", "--Switchover:Mode=Disabled",
                $"--Text={direct}", "--contentRoot", Path.GetDirectoryName(Artifacts.EchoServer)!,
            ]);
            await using (app)
            {
                samples.Add(new LaunchSample("Mode=Disabled", round, await FirstAnswerAsync(lab, DirectPort, direct + " ", stopwatch, cancellationToken), null));
                app.SendSignal(Signals.Terminate);
                await app.Exited.WaitAsync(Timeout, cancellationToken);
            }
        }

        var median = (string v) => Stats.Percentile(samples.Where(s => s.Variant == v).Select(s => s.FirstAnswerMs), 50) ?? 0;
        progress.Line(string.Create(CultureInfo.InvariantCulture,
            $"  launch to first answer, median of {settings.KernelMemoryRounds}: Switchover {median("Switchover"):0} ms, the same app with Mode=Disabled {median("Mode=Disabled"):0} ms"));
        return samples;
    }

    /// <summary>Asks the port every 2 ms (a new connection each time) until the answer's body starts with <paramref name="prefix"/>.</summary>
    private static async Task<double> FirstAnswerAsync(TwoHostLab lab, int port, string prefix, Stopwatch since, CancellationToken cancellationToken)
    {
        var endpoint = new IPEndPoint(lab.ServerV4, port);
        var request = "GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"u8.ToArray();
        var buffer = new byte[4096];
        while (since.Elapsed < Timeout)
        {
            using var socket = lab.Client.CreateSocket(endpoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(endpoint, cancellationToken);
                await socket.SendAsync(request, System.Net.Sockets.SocketFlags.None, cancellationToken);
                var length = 0;
                int read;
                while ((read = await socket.ReceiveAsync(buffer.AsMemory(length), System.Net.Sockets.SocketFlags.None, cancellationToken)) > 0 && length + read < buffer.Length)
                {
                    length += read;
                }

                if (IdleConnections.TryParse(System.Text.Encoding.ASCII.GetString(buffer, 0, length)) is { } body && body.StartsWith(prefix, StringComparison.Ordinal))
                {
                    return since.Elapsed.TotalMilliseconds;
                }
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException)
            {
                // Not listening yet, or closed early: ask again.
            }

            await Task.Delay(2, cancellationToken);
        }

        throw new TimeoutException($"nothing answered '{prefix}' on port {port} within {Timeout.TotalSeconds:0} s");
    }

    [GeneratedRegex(@"host built (\d+), Kestrel bound (\d+), checks (\d+), registered (\d+), ready (\d+), took over (\d+) \(rule transaction ([\d.]+)")]
    private static partial Regex WaterfallLine();

    private async Task<IReadOnlyList<MemorySample>> MemoryAsync(TwoHostLab lab, SwitchoverService service, CancellationToken cancellationToken)
    {
        var samples = new List<MemorySample>();
        for (var round = 1; round <= settings.KernelMemoryRounds; round++)
        {
            var generation = await service.DeployAsync(Next(), Timeout, cancellationToken);
            await RequestsAsync(lab, Port, cancellationToken);
            samples.Add(new MemorySample("Switchover", round, Rss(generation.Process.Pid)));
            if (round == 1)
            {
                // What a default generation never loads (docs/kernel-speed.md): libnftables (the handoff's table goes
                // through our own netlink batches), HTTP and regex for readiness and the state file, and the health
                // checks' assembly in an app that registers none.
                var maps = File.ReadAllLines($"/proc/{generation.Process.Pid.ToString(CultureInfo.InvariantCulture)}/maps");
                foreach (var library in NeverMapped)
                {
                    var mapped = maps.FirstOrDefault(l => l.EndsWith("/" + library, StringComparison.Ordinal));
                    progress.Line($"  {library} mapped by a default generation after its handoff: {(mapped is null ? "no" : "yes")}");
                    if (mapped is not null)
                    {
                        _problems.Add($"a default generation mapped {library} ({mapped.Trim()})");
                    }
                }
            }

            // The same with the nft and conntrack programs instead of libnftables and ctnetlink: what the library costs.
            generation = await service.DeployAsync(Next(), Timeout, cancellationToken, OldWay);
            await RequestsAsync(lab, Port, cancellationToken);
            samples.Add(new MemorySample("Switchover with NftPath, ConntrackPath", round, Rss(generation.Process.Pid)));

            var direct = lab.Server.StartProcess("dotnet",
            [
                Artifacts.EchoServer, "--urls", $"http://[::]:{DirectPort.ToString(CultureInfo.InvariantCulture)}", "--Switchover:Mode=Disabled",
                $"--Text=d{round.ToString(CultureInfo.InvariantCulture)}", "--contentRoot", Path.GetDirectoryName(Artifacts.EchoServer)!,
            ]);
            await using (direct)
            {
                await direct.WaitForOutputAsync("Now listening on", Timeout, cancellationToken);
                await RequestsAsync(lab, DirectPort, cancellationToken);
                samples.Add(new MemorySample("Mode=Disabled", round, Rss(direct.Pid)));
                direct.SendSignal(Signals.Terminate);
                await direct.Exited.WaitAsync(Timeout, cancellationToken);
            }
        }

        var median = (string v) => Stats.Percentile(samples.Where(s => s.Variant == v).Select(s => s.RssMb), 50) ?? 0;
        progress.Line(string.Create(CultureInfo.InvariantCulture,
            $"  resident memory after 200 requests, median of {settings.KernelMemoryRounds}: Switchover {median("Switchover"):0.0} MB, " +
            $"with the programs instead of the library {median("Switchover with NftPath, ConntrackPath"):0.0} MB, Mode=Disabled {median("Mode=Disabled"):0.0} MB"));
        return samples;
    }

    private static async Task RequestsAsync(TwoHostLab lab, int port, CancellationToken cancellationToken)
    {
        var result = await HttpLoad.RunAsync(
            [new LoadTarget(lab.Client, new IPEndPoint(lab.ServerV4, port), "memory")],
            new LoadOptions { Mode = ConnectionMode.KeepAlive, Concurrency = 1, MaxRequests = 200, MaxDuration = TimeSpan.FromSeconds(30) },
            cancellationToken);
        if (result.OkCount < 200)
        {
            throw new InvalidOperationException($"only {result.OkCount} of 200 requests to port {port} succeeded");
        }
    }

    private static readonly string[] NeverMapped =
    [
        "libnftables.so.1", "System.Net.Http.dll", "System.Text.RegularExpressions.dll", "Microsoft.Extensions.Diagnostics.HealthChecks.dll",
    ];

    private static double Rss(int pid)
    {
        var line = File.ReadLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
    }

    /// <summary>
    /// A table of its own (inet switchover_kbench, two generations of a namespace) applied back and forth, in turn
    /// through our netlink batches, libnftables and the nft program (which goes first rotates from round to round),
    /// each call timed from the call to the kernel's answer. Every call runs on the namespace's thread, so the program is
    /// forked there, as a generation would fork it.
    /// </summary>
    private sealed class BenchTable(NftClient netlink, NftClient libnftables, NftClient program, NamespaceWorker worker)
    {
        private static readonly NamespaceName Name = NamespaceName.Parse("kbench");

        private readonly HandoffTable[] _tables =
        [
            Table(active: 7, draining: 6),
            Table(active: 8, draining: 7),
        ];

        public IReadOnlyList<Timings> Run(string phase, int count, TimeSpan spacing)
        {
            List<double> nl = [], nlCpu = [], lib = [], libCpu = [], prog = [], progCpu = [];
            var clients = new[] { (netlink, nl, nlCpu), (libnftables, lib, libCpu), (program, prog, progCpu) };
            var call = 0;
            for (var i = -5; i < count; i++)
            {
                for (var k = 0; k < clients.Length; k++)
                {
                    // Every call changes the table (the other generation active), and the first transport rotates.
                    var (client, wall, cpu) = clients[(i + 5 + k) % clients.Length];
                    var t = Time(client, _tables[call++ % 2]);
                    if (i >= 0)
                    {
                        wall.Add(t.Wall);
                        cpu.Add(t.Cpu);
                    }
                }

                if (spacing > TimeSpan.Zero)
                {
                    Thread.Sleep(spacing);
                }
            }

            // Under rolling load, superseded generations (children of this process too) are reaped now and then, and
            // getrusage(RUSAGE_CHILDREN) would count their CPU as the nft program's: the program's CPU is shown only without load.
            return [Timings.Of($"netlink, {phase}", nl, nlCpu), Timings.Of($"libnftables, {phase}", lib, libCpu), Timings.Of($"nft program, {phase}", prog, spacing == TimeSpan.Zero ? progCpu : null)];
        }

        public void Delete() => worker.Run(() =>
        {
            netlink.DeleteTableAsync(Name, CancellationToken.None).GetAwaiter().GetResult();
            return true;
        });

        /// <summary>Wall time, and CPU time of this thread (encoding or libnftables, and the kernel's commit, done in its syscalls) plus the program's.</summary>
        private (double Wall, double Cpu) Time(NftClient client, HandoffTable table) => worker.Run(() =>
        {
            var cpu = CpuClock.Thread() + CpuClock.Children();
            var stopwatch = Stopwatch.StartNew();
            client.ApplyAsync(table, CancellationToken.None).GetAwaiter().GetResult();
            return (stopwatch.Elapsed.TotalMilliseconds, (CpuClock.Thread() + CpuClock.Children() - cpu).TotalMilliseconds);
        });

        private static HandoffTable Table(long active, long draining)
        {
            var state = NamespaceState.Empty(Name)
                .With(new GenerationRecord(draining, 1000 + (int)draining, 5, GenerationState.Draining, DateTimeOffset.UnixEpoch,
                    [new PortMapping(9080, 40000 + (int)draining), new PortMapping(9443, 41000 + (int)draining)], Steering.Tproxy))
                .With(new GenerationRecord(active, 1000 + (int)active, 5, GenerationState.Active, DateTimeOffset.UnixEpoch,
                    [new PortMapping(9080, 40000 + (int)active), new PortMapping(9443, 41000 + (int)active)], Steering.Tproxy));
            return HandoffTable.FromState(Name, state);
        }
    }
}
