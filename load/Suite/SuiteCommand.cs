using System.CommandLine;
using System.Globalization;
using Switchover.Lab;

namespace Switchover.Load.Suite;

/// <summary>The command line: defaults of the full or the quick suite, each overridable.</summary>
internal static class SuiteCommand
{
    public static async Task<int> RunAsync(string[] args)
    {
        var quick = new Option<bool>("--quick") { Description = "The short suite (under two minutes): fewer handoffs, rounds and swaps." };
        var scenarios = new Option<string[]>("--scenarios")
        {
            Description = "Which scenarios to run: rolling, overhead, timing, kernel, drain, soak (default: rolling, overhead, timing, kernel).",
            AllowMultipleArgumentsPerToken = true,
        };
        var modes = new Option<string[]>("--modes")
        {
            Description = "Connection modes of the rolling scenario: keepalive, newconn (default: both).",
            AllowMultipleArgumentsPerToken = true,
        };
        var contenders = new Option<string[]>("--contenders")
        {
            Description = "Rolling contenders: switchover, naive, reuseport (default: all; switchover always runs).",
            AllowMultipleArgumentsPerToken = true,
        };
        var clients = new Option<string[]>("--clients")
        {
            Description = "Rolling load clients: driver (ours), wrk (default: both).",
            AllowMultipleArgumentsPerToken = true,
        };
        var handoffs = new Option<int?>("--handoffs") { Description = "Handoffs per rolling run at least (default 8; quick 2)." };
        var minRequests = new Option<long?>("--min-requests")
        {
            Description = "Requests the Switchover run of each mode must see at least, with our driver; handoffs continue until then (default 0).",
        };
        var baselineHandoffs = new Option<int?>("--baseline-handoffs")
        {
            Description = "Cap the baselines' handoffs per run (default: as many as the Switchover run did, which --min-requests can make many).",
        };
        var interval = new Option<double?>("--interval") { Description = "Seconds from one handoff's start to the next (default 2; quick 1.5)." };
        var concurrency = new Option<int?>("--concurrency") { Description = "Connections of the rolling and overhead load, ours and wrk's (default 32)." };
        var rate = new Option<double?>("--rate") { Description = "Cap our driver's request rate (requests/s over all connections); default: uncapped." };
        var swaps = new Option<int?>("--swaps") { Description = "Handoffs of the timing scenario (default 20; quick 4)." };
        var idle = new Option<int?>("--idle-connections") { Description = "Idle connections held open on the old generation (default 10000)." };
        var idleSwaps = new Option<int?>("--idle-swaps") { Description = "Handoffs with the idle connections held (default 5; quick 1)." };
        var rounds = new Option<int?>("--overhead-rounds") { Description = "Alternating rounds per variant of the overhead scenario (default 3; quick 2)." };
        var roundSeconds = new Option<double?>("--overhead-seconds") { Description = "Seconds per overhead round (default 3; quick 1)." };
        var drainKeepAlive = new Option<double?>("--drain-keepalive")
        {
            Description = "Drain scenario: Kestrel's keep-alive timeout in seconds (default: Kestrel's own, 130; quick 10).",
        };
        var drainAbandoned = new Option<int?>("--drain-abandoned")
        {
            Description = "Drain scenario: idle connections opened on each generation and never used again (default 200; 0 for returning clients only).",
        };
        var maxMinutes = new Option<double?>("--max-minutes") { Description = "Abort the suite after this many minutes (default 30; quick 10)." };
        var transactions = new Option<int?>("--transactions") { Description = "Rule transactions per transport and phase in the kernel scenario (default 300; quick 100)." };
        var kernelIdle = new Option<string[]>("--kernel-idle")
        {
            Description = "Idle connection counts of the kernel scenario's drain polls and handoffs (default 10000 50000; quick 10000).",
            AllowMultipleArgumentsPerToken = true,
        };
        var kernelParts = new Option<string[]>("--kernel-parts")
        {
            Description = "Parts of the kernel scenario to run (default all): transactions programs idle launch memory.",
            AllowMultipleArgumentsPerToken = true,
        };
        var seed = new Option<int?>("--seed") { Description = "Soak: seeds the plan of faults, steps and delays (default: a random seed, printed first)." };
        var soakRounds = new Option<int?>("--soak-rounds") { Description = "Soak: rounds at most (default 30)." };
        var soakMinutes = new Option<double?>("--soak-minutes") { Description = "Soak: no round starts after this many minutes (default 20)." };
        var output = new Option<string?>("--output") { Description = "Report directory (default load/results/<UTC timestamp>)." };

        var root = new RootCommand(
            "Switchover's load suite: rolling deploys under load next to baselines, the redirect's overhead, and handoff timing. " +
            "Exit codes: 0 Switchover showed no failure; 1 Switchover showed a failure; 2 the suite could not run; 3 the naive baseline " +
            "showed no failure either (the harness did not see drops).")
        {
            quick, scenarios, modes, contenders, clients, handoffs, baselineHandoffs, minRequests, interval, concurrency, rate, swaps, idle, idleSwaps, rounds,
            roundSeconds, drainKeepAlive, drainAbandoned, transactions, kernelIdle, kernelParts, seed, soakRounds, soakMinutes, maxMinutes, output,
        };

        root.SetAction(async (parse, cancellationToken) =>
        {
            var settings = parse.GetValue(quick) ? SuiteSettings.QuickSuite : SuiteSettings.Full;
            try
            {
                var selectedScenarios = Pick(parse.GetValue(scenarios), "scenario", ["rolling", "overhead", "timing", "kernel", "drain", "soak"]);
                settings = settings with
                {
                    RunRolling = selectedScenarios?.Contains("rolling") ?? settings.RunRolling,
                    RunOverhead = selectedScenarios?.Contains("overhead") ?? settings.RunOverhead,
                    RunTiming = selectedScenarios?.Contains("timing") ?? settings.RunTiming,
                    RunDrain = selectedScenarios?.Contains("drain") ?? settings.RunDrain,
                    DrainKeepAlive = Seconds(parse.GetValue(drainKeepAlive), "--drain-keepalive") ?? settings.DrainKeepAlive,
                    DrainAbandoned = parse.GetValue(drainAbandoned) is { } a and >= 0 ? a : settings.DrainAbandoned,
                    RunKernel = selectedScenarios?.Contains("kernel") ?? settings.RunKernel,
                    RunSoak = selectedScenarios?.Contains("soak") ?? settings.RunSoak,
                    SoakSeed = parse.GetValue(seed) ?? Random.Shared.Next(),
                    SoakRounds = Positive(parse.GetValue(soakRounds), "--soak-rounds") ?? settings.SoakRounds,
                    SoakDuration = parse.GetValue(soakMinutes) is { } sm ? (sm > 0 ? TimeSpan.FromMinutes(sm) : throw new ArgumentException("--soak-minutes must be positive.")) : settings.SoakDuration,
                    KernelTransactions = Positive(parse.GetValue(transactions), "--transactions") ?? settings.KernelTransactions,
                    KernelIdleConnections = parse.GetValue(kernelIdle) is { Length: > 0 } k
                        ? [.. k.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries)).Select(v => int.Parse(v, CultureInfo.InvariantCulture))]
                        : settings.KernelIdleConnections,
                    KernelParts = Pick(parse.GetValue(kernelParts), "kernel part", SuiteSettings.KernelPartNames)?.ToHashSet() ?? settings.KernelParts,
                    Modes = Pick(parse.GetValue(modes), "mode", ["keepalive", "newconn"])?
                        .Select(m => m == "keepalive" ? ConnectionMode.KeepAlive : ConnectionMode.NewConnectionPerRequest).ToList() ?? settings.Modes,
                    Contenders = Pick(parse.GetValue(contenders), "contender", ["switchover", "naive", "reuseport"])?
                        .Select(c => c switch { "naive" => ContenderKind.Naive, "reuseport" => ContenderKind.ReusePort, _ => ContenderKind.Switchover })
                        .Append(ContenderKind.Switchover).Distinct().ToList() ?? settings.Contenders,
                    Clients = Pick(parse.GetValue(clients), "client", ["driver", "wrk"])?
                        .Select(c => c == "wrk" ? ClientKind.Wrk : ClientKind.Driver).ToList() ?? settings.Clients,
                    Handoffs = Positive(parse.GetValue(handoffs), "--handoffs") ?? settings.Handoffs,
                    BaselineHandoffs = Positive(parse.GetValue(baselineHandoffs), "--baseline-handoffs") ?? settings.BaselineHandoffs,
                    MinRequests = parse.GetValue(minRequests) is { } m and >= 0 ? m : settings.MinRequests,
                    Interval = Seconds(parse.GetValue(interval), "--interval") ?? settings.Interval,
                    Concurrency = Positive(parse.GetValue(concurrency), "--concurrency") ?? settings.Concurrency,
                    Rate = parse.GetValue(rate) is { } r ? (r > 0 ? r : throw new ArgumentException("--rate must be positive.")) : settings.Rate,
                    TimingSwaps = Positive(parse.GetValue(swaps), "--swaps") ?? settings.TimingSwaps,
                    IdleConnections = parse.GetValue(idle) is { } i and >= 0 ? i : settings.IdleConnections,
                    IdleSwaps = parse.GetValue(idleSwaps) is { } s and >= 0 ? s : settings.IdleSwaps,
                    OverheadRounds = Positive(parse.GetValue(rounds), "--overhead-rounds") ?? settings.OverheadRounds,
                    OverheadRoundDuration = Seconds(parse.GetValue(roundSeconds), "--overhead-seconds") ?? settings.OverheadRoundDuration,
                    MaxSuiteDuration = parse.GetValue(maxMinutes) is { } x and > 0 ? TimeSpan.FromMinutes(x) : settings.MaxSuiteDuration,
                    OutputDirectory = parse.GetValue(output) ?? settings.OutputDirectory,
                };
            }
            catch (ArgumentException e)
            {
                await Console.Error.WriteLineAsync("switchover-load: " + e.Message);
                return ExitCodes.CouldNotRun;
            }

            return await LoadSuite.RunAsync(settings, args, cancellationToken);
        });

        var result = root.Parse(args);
        return await result.InvokeAsync();
    }

    private static List<string>? Pick(string[]? values, string what, string[] allowed)
    {
        if (values is null || values.Length == 0)
        {
            return null;
        }

        var picked = values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Select(v => v.ToLowerInvariant()).Distinct().ToList();
        var unknown = picked.Except(allowed).ToList();
        return unknown.Count == 0
            ? picked
            : throw new ArgumentException($"Unknown {what} '{string.Join("', '", unknown)}'; use {string.Join(", ", allowed)}.");
    }

    private static int? Positive(int? value, string name) =>
        value is null or > 0 ? value : throw new ArgumentException($"{name} must be positive (was {value}).");

    private static TimeSpan? Seconds(double? value, string name) =>
        value is null ? null
        : value > 0 && double.IsFinite(value.Value) ? TimeSpan.FromSeconds(value.Value)
        : throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{name} must be a positive number of seconds (was {value})."));
}

internal static class ExitCodes
{
    public const int Passed = 0;
    public const int SwitchoverFailed = 1;
    public const int CouldNotRun = 2;
    public const int HarnessBlind = 3;
}
