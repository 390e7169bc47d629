using System.Globalization;
using System.Text;
using Switchover.Lab;
using Switchover.Load.Native;
using Switchover.Load.Report;
using Switchover.Load.Scenarios;

namespace Switchover.Load.Suite;

/// <summary>Runs the selected scenarios, writes the report and the charts, and turns the outcome into an exit code.</summary>
internal static class LoadSuite
{
    private static readonly Dictionary<ContenderKind, string> Colors = new()
    {
        [ContenderKind.Switchover] = "#1b9e77",
        [ContenderKind.Naive] = "#d62728",
        [ContenderKind.ReusePort] = "#ff7f0e",
    };

    public static async Task<int> RunAsync(SuiteSettings settings, string[] args, CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            await Console.Error.WriteLineAsync("switchover-load: the suite builds network namespaces and nftables rules: run it as root on Linux.");
            return ExitCodes.CouldNotRun;
        }

        // 10,000 idle connections need as many descriptors in this process and in the server, plus the load's own.
        var idleMost = Math.Max(settings.IdleConnections, settings.RunKernel ? settings.KernelIdleConnections.DefaultIfEmpty(0).Max() : 0);
        var wantedFiles = (ulong)Math.Max(65_536, (idleMost * 2) + 10_000);
        var openFiles = ResourceLimits.RaiseOpenFiles(wantedFiles);
        var started = DateTime.UtcNow;
        var output = settings.OutputDirectory
            ?? Path.Combine(Artifacts.RepositoryRoot, "load", "results", started.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        Directory.CreateDirectory(output);
        var progress = new Progress(Console.Out);
        if (settings.RunSoak)
        {
            // First, so that a run cut short can still be replayed.
            progress.Line($"soak seed {settings.SoakSeed}; replay: {SoakScenario.ReplayCommand(settings)}");
        }

        var commandLine = "dotnet run -c Release --project load" + (args.Length > 0 ? " -- " + string.Join(' ', args) : string.Empty);
        progress.Line($"{commandLine}: {(settings.Quick ? "quick" : "full")} suite; report in {output}; open-file limit {openFiles}");

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(settings.MaxSuiteDuration);
        var token = timeout.Token;
        var machine = await MachineInfo.CollectAsync(token);
        var git = await MachineInfo.GitDescriptionAsync(Artifacts.RepositoryRoot, token);
        var errors = new List<string>();
        IReadOnlyList<RollingRun> rolling = [];
        IReadOnlyList<OverheadRound> overhead = [];
        OverheadScenario? overheadScenario = null;
        TimingResult? timing = null;

        if (settings.RunRolling)
        {
            rolling = await Guard("rolling", () => new RollingScenario(settings, progress).RunAsync(token), errors, progress) ?? [];
        }

        if (settings.RunOverhead && !token.IsCancellationRequested)
        {
            overheadScenario = new OverheadScenario(settings, progress);
            overhead = await Guard("overhead", () => overheadScenario.RunAsync(token), errors, progress) ?? [];
        }

        if (settings.RunTiming && !token.IsCancellationRequested)
        {
            timing = await Guard("timing", () => new TimingScenario(settings, progress).RunAsync(token), errors, progress);
        }

        IReadOnlyList<DrainPolicyRun> drain = [];
        if (settings.RunDrain && !token.IsCancellationRequested)
        {
            drain = await Guard("drain", () => new DrainScenario(settings, progress).RunAsync(token), errors, progress) ?? [];
        }

        KernelResult? kernel = null;
        if (settings.RunKernel && !token.IsCancellationRequested)
        {
            kernel = await Guard("kernel", () => new KernelScenario(settings, progress).RunAsync(token), errors, progress);
        }

        SoakResult? soak = null;
        if (settings.RunSoak && !token.IsCancellationRequested)
        {
            soak = await Guard("soak", () => new SoakScenario(settings, progress).RunAsync(token), errors, progress);
            if (soak is not null)
            {
                progress.Line(soak.Headline.Replace("**", string.Empty, StringComparison.Ordinal));
            }
        }

        if (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            errors.Add($"The suite was aborted after {settings.MaxSuiteDuration.TotalMinutes:0} minutes (--max-minutes).");
        }

        var result = new SuiteResult(settings, commandLine, started, DateTime.UtcNow - started, machine, git, MachineInfo.LoadAverage(),
            rolling, overhead, timing, errors)
        {
            Drain = drain,
            ChainProfiles = overheadScenario?.Profiles ?? [],
            ChainProfileProblem = overheadScenario?.ProfileProblem,
            Kernel = kernel,
            Soak = soak,
        };
        var charts = WriteCharts(result, output);
        var reportPath = Path.Combine(output, "report.md");
        await File.WriteAllTextAsync(reportPath, MarkdownReport.Render(result, charts), CancellationToken.None);
        await WriteFailureLogAsync(result, Path.Combine(output, "failures.log"));
        var diagnostics = rolling.SelectMany(r => r.Diagnostics).ToList();
        if (diagnostics.Count > 0)
        {
            await File.WriteAllTextAsync(Path.Combine(output, "diagnostics.log"), string.Join('\n', diagnostics), CancellationToken.None);
        }

        var failures = result.SwitchoverFailures();
        progress.Line(result.ExitCode switch
        {
            ExitCodes.Passed => "PASS: Switchover showed no failure.",
            ExitCodes.SwitchoverFailed => $"FAIL: Switchover showed {failures.Count} failure(s): {string.Join(" | ", failures.Take(5))}",
            ExitCodes.HarnessBlind => "SUSPECT: the naive baseline showed no failure; the harness may not see drops.",
            _ => "INCOMPLETE: " + string.Join(" | ", errors.Select(e => e.Split('\n')[0])),
        });
        progress.Line($"report: {reportPath}");
        return result.ExitCode;
    }

    private static async Task<T?> Guard<T>(string scenario, Func<Task<T>> run, List<string> errors, Progress progress)
        where T : class
    {
        try
        {
            return await run();
        }
#pragma warning disable CA1031 // A scenario that breaks is reported; the others still run and the report is still written.
        catch (Exception e)
#pragma warning restore CA1031
        {
            errors.Add($"{scenario}: {e}");
            progress.Line($"{scenario} could not finish: {e.Message.Split('\n')[0]}");
            return null;
        }
    }

    private static Dictionary<string, string> WriteCharts(SuiteResult result, string output)
    {
        var charts = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var group in result.Rolling.Where(r => r.Driver is not null).GroupBy(r => (r.Client, r.Mode)))
        {
            var series = group.Select(r => new ChartSeries(
                r.Contender.ToString(),
                Colors[r.Contender],
                r.Driver!.Timeline.Select(s => s.Ok).ToList(),
                r.Driver.Timeline.Select(s => s.Failed).ToList(),
                r.Handoffs.Select(h => (h.StartedUtc - r.LoadStartedUtc).TotalSeconds).ToList())).ToList();
            var key = MarkdownReport.ChartKey(group.Key.Client, group.Key.Mode);
            var file = key + ".svg";
            File.WriteAllText(Path.Combine(output, file),
                SvgChart.Render($"Rolling deploys, our driver, {Modes.Name(group.Key.Mode)}: OK and failed requests per second", series));
            charts[key] = file;
        }

        return charts;
    }

    private static async Task WriteFailureLogAsync(SuiteResult result, string path)
    {
        const int PerRun = 10_000;
        var log = new StringBuilder();
        foreach (var run in result.Rolling.Where(r => r.Driver is not null))
        {
            var driver = run.Driver!;
            log.Append(CultureInfo.InvariantCulture, $"# {run.Label}: {driver.FailureCount} failed, {driver.StaleConnectionsDiscarded} closed without notice; ")
                .Append(CultureInfo.InvariantCulture, $"load started {run.LoadStartedUtc:O}\n");
            foreach (var handoff in run.Handoffs)
            {
                log.Append(CultureInfo.InvariantCulture, $"handoff to v{handoff.Version} began {handoff.StartedUtc:HH:mm:ss.fff}, took {handoff.Took.TotalMilliseconds:0} ms\n");
            }

            foreach (var failure in driver.Failures.Take(PerRun))
            {
                log.Append(failure).Append('\n');
            }

            var unlisted = driver.Failures.Count - Math.Min(PerRun, driver.Failures.Count) + driver.FailuresNotRecorded;
            if (unlisted > 0)
            {
                log.Append(CultureInfo.InvariantCulture, $"... and {unlisted} more\n");
            }

            log.Append('\n');
        }

        SoakScenario.Log(log, result.Soak);
        await File.WriteAllTextAsync(path, log.ToString(), CancellationToken.None);
    }
}
