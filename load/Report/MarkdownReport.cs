using System.Globalization;
using System.Text;
using Switchover.Lab;
using Switchover.Load.Scenarios;
using Switchover.Load.Suite;

namespace Switchover.Load.Report;

/// <summary>The report: verdict and headline numbers first, then a section per scenario, then the machine.</summary>
internal static class MarkdownReport
{
    public static string Render(SuiteResult result, IReadOnlyDictionary<string, string> charts)
    {
        var md = new StringBuilder();
        var switchoverFailures = result.SwitchoverFailures();
        md.AppendLine(Inv($"# Switchover load report, {result.StartedUtc:yyyy-MM-dd HH:mm:ss} UTC"))
            .AppendLine()
            .AppendLine(Inv($"`{result.CommandLine}` ({(result.Settings.Quick ? "quick suite" : "full suite")}, {result.Duration.TotalMinutes:0.0} min, commit {result.GitCommit})"))
            .AppendLine()
            .AppendLine(Verdict(result, switchoverFailures))
            .AppendLine();

        Headlines(md, result);
        if (switchoverFailures.Count > 0)
        {
            md.AppendLine("## Switchover failures").AppendLine();
            foreach (var failure in switchoverFailures)
            {
                md.AppendLine("- " + failure);
            }

            md.AppendLine();
        }

        if (result.Errors.Count > 0)
        {
            md.AppendLine("## Errors (scenarios that could not finish)").AppendLine();
            foreach (var error in result.Errors)
            {
                md.AppendLine("```").AppendLine(error.Trim()).AppendLine("```");
            }

            md.AppendLine();
        }

        if (result.Rolling.Count > 0)
        {
            Rolling(md, result, charts);
        }

        if (result.Overhead.Count > 0)
        {
            Overhead(md, result);
        }

        if (result.Timing is not null || result.SwitchoverRuns.Any())
        {
            Timing(md, result);
        }

        DrainScenario.Render(md, result.Drain);
        SoakScenario.Render(md, result.Soak);
        if (result.Kernel is { } kernelResult)
        {
            KernelReport.Section(md, kernelResult);
        }

        md.AppendLine("## Machine").AppendLine().AppendLine("| | |").AppendLine("|---|---|");
        foreach (var (name, value) in result.Machine.Facts)
        {
            md.AppendLine(Inv($"| {name} | {Cell(value)} |"));
        }

        md.AppendLine(Inv($"| Load average at end | {result.LoadAverageAtEnd} |"))
            .AppendLine()
            .AppendLine("Everything ran in network namespaces the suite created and deleted: the server in one, the client in another, joined by a veth pair " +
                        "(192.0.2.1/2001:db8::1 and .2). Client and server share the machine's cores, so every number here includes the client's own cost.");
        return md.ToString();
    }

    private static string Verdict(SuiteResult result, IReadOnlyList<string> switchoverFailures)
    {
        if (switchoverFailures.Count > 0)
        {
            return $"**FAIL: Switchover showed {switchoverFailures.Count} failure(s)** (listed below).";
        }

        if (result.Errors.Count > 0)
        {
            return "**INCOMPLETE: a scenario could not finish** (see Errors); Switchover showed no failure in what did run.";
        }

        if (result.BlindBaselines.Any())
        {
            return "**SUSPECT: the naive baseline showed no failure**, so this run does not prove that the harness sees drops.";
        }

        var switchover = result.SwitchoverRuns.ToList();
        return switchover.Count == 0
            ? "**PASS: Switchover showed no failure.**"
            : Inv($"**PASS: Switchover showed no failure** over {switchover.Sum(r => r.Requests):N0} requests and {switchover.Sum(r => r.Handoffs.Count)} handoffs under load.");
    }

    private static void Headlines(StringBuilder md, SuiteResult result)
    {
        md.AppendLine("## Headline numbers").AppendLine();
        foreach (var group in result.Rolling.GroupBy(r => (r.Client, r.Mode)))
        {
            var line = string.Join("; ", group.Select(r =>
                Inv($"{r.Contender} {r.Failures:N0} failed of {r.Requests:N0} over {r.Handoffs.Count} handoffs")));
            md.AppendLine(Inv($"- Rolling, {ClientName(group.Key.Client)}, {Modes.Name(group.Key.Mode)}: {line}."));
        }

        foreach (var group in result.Overhead.GroupBy(r => (r.Client, r.Mode)))
        {
            var ratio = Ratio(group.ToList(), OverheadVariant.Switchover);
            var redirect = Ratio(group.ToList(), OverheadVariant.SwitchoverRedirect);
            var skLookup = Ratio(group.ToList(), OverheadVariant.SkLookup);
            var chains = result.ChainProfiles.FirstOrDefault(p => p.Client == group.Key.Client && p.Mode == group.Key.Mode && p.Variant == OverheadVariant.Switchover);
            var program = result.ChainProfiles.FirstOrDefault(p => p.Client == group.Key.Client && p.Mode == group.Key.Mode && p.Variant == OverheadVariant.SkLookup);
            md.AppendLine(Inv($"- Steering overhead, {ClientName(group.Key.Client)}, {Modes.Name(group.Key.Mode)}: Switchover (TPROXY) ÷ direct throughput = **{ratio:0.000}** (target ≥ 0.97); with Steering=Redirect {redirect:0.000}") +
                          (chains is null ? "" : Inv($"; Switchover's chains {chains.ChainsPercent:0.00} % of busy CPU (target < 0.5 %), {chains.ChainsWithoutLookupsPercent:0.00} % without the socket lookups TPROXY does in the kernel's place")) +
                          (double.IsFinite(skLookup) ? Inv($"; the sk_lookup prototype {skLookup:0.000}") + (program is null ? "" : Inv($", its program {program.SkLookupPercent:0.00} % of busy CPU")) : "") + ".");
        }

        var timing = TimingRows(result).ToList();
        foreach (var (label, handoffs) in timing)
        {
            var rules = handoffs.Where(h => h.Rule is not null).Select(h => h.Rule!.Value.TotalMilliseconds).ToList();
            var launch = handoffs.Select(h => h.Launch.TotalMilliseconds).ToList();
            if (rules.Count > 0)
            {
                md.AppendLine(Inv($"- Handoff timing, {label}: rule transaction p50 {Stats.Percentile(rules, 50):0.0} ms, p99 {Stats.Percentile(rules, 99):0.0} ms; ") +
                              Inv($"launch to serving p50 {Stats.Percentile(launch, 50):0} ms, p99 {Stats.Percentile(launch, 99):0} ms (n = {rules.Count})."));
            }
        }

        foreach (var line in result.Kernel is { } kernel ? KernelReport.Headlines(kernel) : [])
        {
            md.AppendLine("- " + line);
        }

        if (result.Soak is { } soak)
        {
            md.AppendLine("- Fault soak: " + soak.Headline + ".");
        }

        var settings = result.Settings;
        if (settings.MinRequests > 0 || settings.Handoffs >= 50)
        {
            foreach (var run in result.SwitchoverRuns)
            {
                var met = run.Requests >= settings.MinRequests && run.Handoffs.Count >= settings.Handoffs && run.Clean;
                md.AppendLine(Inv($"- Bar for {run.Label} (≥ {settings.MinRequests:N0} requests, ≥ {settings.Handoffs} handoffs, 0 failed): ") +
                              Inv($"{(met ? "**met**" : "**not met**")} ({run.Requests:N0} requests, {run.Handoffs.Count} handoffs, {run.Failures} failed)."));
            }
        }

        md.AppendLine();
    }

    private static void Rolling(StringBuilder md, SuiteResult result, IReadOnlyDictionary<string, string> charts)
    {
        var s = result.Settings;
        md.AppendLine("## Rolling deploys under load").AppendLine()
            .AppendLine(Inv($"v1 serves on port {RollingScenario.Port}; load starts; {s.Lead.TotalSeconds:0.#} s later the first handoff begins, then one every ") +
                        Inv($"{s.Interval.TotalSeconds:0.##} s (a handoff slower than that delays the next); load goes on {s.Tail.TotalSeconds:0.#} s after the last one. ") +
                        Inv($"Each contender runs in fresh namespaces, one after the other, under the same load: {s.Concurrency} connections from the client namespace ") +
                        "(our driver: half to 192.0.2.1:8080, half to [2001:db8::1]:8080; wrk: all to 192.0.2.1:8080)" +
                        (s.Rate is { } rate ? Inv($", capped at {rate:N0} requests/s") : ", each with one request in flight, as fast as the server answers") +
                        ". Switchover runs first and sets the schedule: with our driver it hands off until it has at least " +
                        Inv($"{s.Handoffs} handoffs") + (s.MinRequests > 0 ? Inv($" and {s.MinRequests:N0} requests") : string.Empty) +
                        "; the baselines then replay its number of handoffs" +
                        (s.BaselineHandoffs is { } cap ? Inv($" (at most {cap})") : string.Empty) + " at the same interval under the same client.")
            .AppendLine()
            .AppendLine("Our driver counts every request once, as OK or as what went wrong (refused, reset, timeout, EOF before the response, non-2xx, " +
                        "wrong body, other), and never retries. *Failed* includes kept-alive connections the server closed without `Connection: close` " +
                        "(our driver notices them before reuse; a client that did not would have failed there).")
            .AppendLine();
        foreach (var run in result.Rolling.DistinctBy(r => r.Contender))
        {
            md.AppendLine(Inv($"- **{run.Contender}**: {run.ContenderDescription}."));
        }

        md.AppendLine();
        foreach (var group in result.Rolling.Where(r => r.Client == ClientKind.Driver).GroupBy(r => r.Mode))
        {
            md.AppendLine(Inv($"### Our driver, {Modes.Name(group.Key)}")).AppendLine();
            if (charts.TryGetValue(ChartKey(ClientKind.Driver, group.Key), out var chart))
            {
                md.AppendLine(Inv($"![OK and failed requests per second, {Modes.Name(group.Key)}]({chart})")).AppendLine();
            }

            md.AppendLine("| contender | requests | req/s | failed | failures by kind | seconds with failures | handoffs | handoff took p50 / max | first answer from new version p50 / max | latency p50 / p99 / p99.9 / max | superseded exited |")
                .AppendLine("|---|---:|---:|---:|---|---:|---:|---|---|---|---:|");
            foreach (var run in group)
            {
                var d = run.Driver;
                var kinds = d is null
                    ? "-"
                    : string.Join(", ", d.CountsByOutcome.Where(p => p.Key != RequestOutcome.Ok && p.Value > 0).Select(p => Inv($"{p.Key} {p.Value:N0}"))
                        .Concat(d.StaleConnectionsDiscarded > 0 ? [Inv($"closed without notice {d.StaleConnectionsDiscarded:N0}")] : [])
                        .Concat(d.Abandoned > 0 ? [Inv($"abandoned {d.Abandoned:N0}")] : []));
                var took = run.Handoffs.Select(h => h.Took.TotalMilliseconds).ToList();
                var first = run.FirstServed().Where(f => f.FirstServed is not null).Select(f => f.FirstServed!.Value.TotalMilliseconds).ToList();
                md.AppendLine(Inv($"| {run.Contender} | {run.Requests:N0} | {run.RequestsPerSecond:N0} | {Bold(run.Failures)} | {(kinds.Length == 0 ? "-" : kinds)} | ") +
                              Inv($"{run.SecondsWithFailures} | {run.Handoffs.Count} | {Ms(Stats.Percentile(took, 50))} / {Ms(Stats.Max(took))} | ") +
                              Inv($"{Ms(Stats.Percentile(first, 50))} / {Ms(Stats.Max(first))} | {Latency(d?.Latency)} | {run.RetiredExited}/{run.RetiredTotal} |"));
            }

            md.AppendLine();
            Notes(md, group);
            FailureSamples(md, group);
        }

        var wrk = result.Rolling.Where(r => r.Client == ClientKind.Wrk).ToList();
        if (wrk.Count > 0)
        {
            md.AppendLine("### wrk as the client").AppendLine()
                .AppendLine(Inv($"`wrk -t2 -c{s.Concurrency} -d<run>s --timeout 10s --latency http://192.0.2.1:8080/` inside the client namespace (`ip netns exec`), ") +
                            "with `-H \"Connection: close\"` for a new connection per request. wrk runs for a fixed time, sized from our driver's Switchover run " +
                            "in the same mode (with room for a 20 % lower request rate when a request count is asked for); Switchover hands off for as long as it " +
                            "runs, and the baselines replay that count for the same time (or, replaying fewer, for their schedule and a quarter more). The errors are wrk's own socket-error counts; wrk does not check bodies, " +
                            "and has no per-second timeline.")
                .AppendLine()
                .AppendLine("| mode | contender | requests | req/s | socket errors: connect / read / write / timeout | non-2xx/3xx | handoffs | latency p50 / p90 / p99 |")
                .AppendLine("|---|---|---:|---:|---|---:|---:|---|");
            foreach (var run in wrk)
            {
                var w = run.Wrk;
                md.AppendLine(w is null
                    ? Inv($"| {Modes.Name(run.Mode)} | {run.Contender} | - | - | no result: {Cell(string.Join("; ", run.Problems))} | - | {run.Handoffs.Count} | - |")
                    : Inv($"| {Modes.Name(run.Mode)} | {run.Contender} | {w.Requests:N0} | {w.RequestsPerSecond:N0} | {Bold(w.ConnectErrors)} / {Bold(w.ReadErrors)} / {Bold(w.WriteErrors)} / {Bold(w.TimeoutErrors)} | ") +
                      Inv($"{Bold(w.Non2xx3xx)} | {run.Handoffs.Count} | {WrkLatency(w, "50")} / {WrkLatency(w, "90")} / {WrkLatency(w, "99")} |"));
            }

            md.AppendLine();
            Notes(md, wrk);
        }
    }

    private static void Notes(StringBuilder md, IEnumerable<RollingRun> runs)
    {
        foreach (var run in runs)
        {
            foreach (var text in run.Problems.Select(p => "problem: " + p).Concat(run.Notes))
            {
                md.AppendLine(Inv($"- {run.Label}: {text}"));
            }
        }
    }

    private static void FailureSamples(StringBuilder md, IEnumerable<RollingRun> runs)
    {
        var withFailures = runs.Where(r => r.Driver is { Failures.Count: > 0 }).ToList();
        if (withFailures.Count == 0)
        {
            return;
        }

        md.AppendLine("<details><summary>First failures of each run, with the handoff they followed</summary>").AppendLine().AppendLine("```");
        foreach (var run in withFailures)
        {
            md.AppendLine(run.Label + ":");
            foreach (var failure in run.Driver!.Failures.Take(8))
            {
                var previous = run.Handoffs.LastOrDefault(h => h.StartedUtc <= failure.TimestampUtc);
                var after = previous is null ? "before the first handoff" : Inv($"{(failure.TimestampUtc - previous.StartedUtc).TotalSeconds:0.000} s after handoff to v{previous.Version} began");
                md.AppendLine(Inv($"  +{failure.Elapsed.TotalSeconds:0.000} s ({after}) {failure.Target} {failure.Kind}: {failure.Detail}"));
            }

            var byHandoff = run.Driver.Failures.GroupBy(f => run.Handoffs.LastOrDefault(h => h.StartedUtc <= f.TimestampUtc)?.Version ?? 1).ToList();
            md.AppendLine(Inv($"  recorded failures fall after {byHandoff.Count} distinct handoff(s) (of {run.Handoffs.Count})"));
        }

        md.AppendLine("```").AppendLine("</details>").AppendLine();
    }

    private static void Overhead(StringBuilder md, SuiteResult result)
    {
        var s = result.Settings;
        md.AppendLine("## Redirect overhead (steady state)").AppendLine()
            .AppendLine(Inv($"The same app (samples/EchoServer, v1) in three labs side by side: bound directly to port 8080 (*Direct*), bound directly with ") +
                        "one nftables `ct state` rule in its namespace so that every packet goes through connection tracking (*DirectWithConntrack*), and " +
                        Inv($"behind the Switchover redirect (*Switchover*). After a 1 s warm-up each, {s.OverheadRounds} rounds of {s.OverheadRoundDuration.TotalSeconds:0.#} s ") +
                        Inv($"per variant, in rotating order, {s.Concurrency} connections, no rate cap. Throughput is total requests ÷ total time over the rounds; ") +
                        "latency percentiles are of the merged histograms of the rounds (our driver). CPU is per request: the whole machine " +
                        "(client, server and kernel; softirq is where packet processing, conntrack and NAT of received packets mostly run) and the server process alone. " +
                        "The machine-wide figures include whatever else runs on the machine; on a shared one, trust the server-process column and the ratios more.")
            .AppendLine();
        foreach (var group in result.Overhead.GroupBy(r => (r.Client, r.Mode)))
        {
            var rounds = group.ToList();
            md.AppendLine(Inv($"### {ClientName(group.Key.Client)}, {Modes.Name(group.Key.Mode)}")).AppendLine()
                .AppendLine("| variant | requests | req/s | ÷ direct | per-round ÷ direct | latency p50 / p99 / p99.9 | machine CPU µs/req | softirq µs/req | server CPU µs/req | failed |")
                .AppendLine("|---|---:|---:|---:|---|---|---:|---:|---:|---:|");
            foreach (var variant in Enum.GetValues<OverheadVariant>())
            {
                var mine = rounds.Where(r => r.Variant == variant).ToList();
                if (mine.Count == 0)
                {
                    continue;
                }

                var requests = mine.Sum(r => r.Requests);
                var perRound = mine.Select(r =>
                {
                    var direct = rounds.FirstOrDefault(d => d.Variant == OverheadVariant.Direct && d.Round == r.Round);
                    return direct is null || direct.RequestsPerSecond == 0 ? double.NaN : r.RequestsPerSecond / direct.RequestsPerSecond;
                }).Where(double.IsFinite).ToList();
                var latency = mine.All(r => r.Driver is not null) ? LoadResult.CombineLatency(mine.Select(r => r.Driver!)) : null;
                md.AppendLine(Inv($"| {variant} | {requests:N0} | {requests / mine.Sum(r => r.Duration.TotalSeconds):N0} | {Ratio(rounds, variant):0.000} | ") +
                              Inv($"{(perRound.Count == 0 ? "-" : $"{perRound.Min():0.000} to {perRound.Max():0.000}")} | ") +
                              Inv($"{(latency is null ? "wrk's p99 of each round: " + string.Join(", ", mine.Select(r => WrkLatency(r.Wrk!, "99"))) : Ms(latency.P50) + " / " + Ms(latency.P99) + " / " + Ms(latency.P999))} | ") +
                              Inv($"{PerRequest(mine, c => c.MachineBusy):0.0} | {PerRequest(mine, c => c.Softirq):0.0} | {PerRequest(mine, c => c.Process):0.0} | {Bold(mine.Sum(r => r.Failures))} |"));
            }

            md.AppendLine();
            var direct = PerRequest(rounds.Where(r => r.Variant == OverheadVariant.Direct).ToList(), c => c.MachineBusy);
            var conntrack = PerRequest(rounds.Where(r => r.Variant == OverheadVariant.DirectWithConntrack).ToList(), c => c.MachineBusy);
            var switchover = PerRequest(rounds.Where(r => r.Variant == OverheadVariant.Switchover).ToList(), c => c.MachineBusy);
            var redirect = PerRequest(rounds.Where(r => r.Variant == OverheadVariant.SwitchoverRedirect).ToList(), c => c.MachineBusy);
            var skLookup = PerRequest(rounds.Where(r => r.Variant == OverheadVariant.SkLookup).ToList(), c => c.MachineBusy);
            if (direct > 0 && conntrack > 0 && switchover > 0)
            {
                md.AppendLine(Inv($"Machine CPU per request: direct {direct:0.0} µs, with conntrack {conntrack:0.0} µs ({conntrack - direct:+0.0;-0.0} µs), ") +
                              Inv($"behind Switchover's TPROXY {switchover:0.0} µs ({switchover - direct:+0.0;-0.0} µs: {switchover - conntrack:+0.0;-0.0} µs more than conntrack alone, for the rules), ") +
                              Inv($"behind its REDIRECT {redirect:0.0} µs ({redirect - conntrack:+0.0;-0.0} µs more than conntrack alone, for NAT and the rules)") +
                              (skLookup > 0 ? Inv($", through the sk_lookup prototype {skLookup:0.0} µs ({skLookup - direct:+0.0;-0.0} µs, no conntrack).") : ".")).AppendLine();
            }

            var profiles = result.ChainProfiles.Where(p => p.Client == group.Key.Client && p.Mode == group.Key.Mode).ToList();
            if (profiles.Count > 0)
            {
                md.AppendLine("Where the CPU went, one more round per variant under `perf record -a -g` (cpu-clock, 1999 Hz, the whole machine; " +
                              "busy = every sample but the idle loop). *In nftables chains*: samples with `nft_do_chain` on the stack, which in the " +
                              "Switchover variants are Switchover's own chains (target < 0.5 %); *in conntrack*: `nf_conntrack_in`; *in sk_lookup*: the kernel running the " +
                              "SkLookup variant's BPF program (`inet_lookup_run_sk_lookup`), the program included; *socket lookups*: the kernel's TCP socket lookups " +
                              "(established and listener), wherever called; *chains without their lookups*: the chains' samples less those in a lookup that TPROXY " +
                              "did, after which the kernel takes the assigned socket and skips its own (compare the socket lookups with the direct variant's).").AppendLine()
                    .AppendLine("| variant | busy samples | in nftables chains | chains without their lookups | socket lookups | in conntrack | in sk_lookup | the chains' samples, by what nft_do_chain called |").AppendLine("|---|---:|---:|---:|---:|---:|---:|---|");
                foreach (var p in profiles)
                {
                    md.AppendLine(Inv($"| {p.Variant} | {p.Busy:N0} | {p.InChains:N0} ({p.ChainsPercent:0.00} %) | {p.InChains - p.InChainLookups:N0} ({p.ChainsWithoutLookupsPercent:0.00} %) | {p.InLookups:N0} ({p.LookupsPercent:0.00} %) | {p.InConntrack:N0} ({p.ConntrackPercent:0.00} %) | {p.InSkLookup:N0} ({p.SkLookupPercent:0.00} %) | ") +
                                  string.Join(", ", p.ChainCallees.Select(c => Inv($"{c.Function} {c.Samples}"))) + " |");
                }

                md.AppendLine();
            }
            else if (result.ChainProfileProblem is { } problem)
            {
                md.AppendLine(Inv($"**No CPU profile of the chains:** {problem}.")).AppendLine();
            }
        }
    }

    private static void Timing(StringBuilder md, SuiteResult result)
    {
        md.AppendLine("## Handoff timing").AppendLine()
            .AppendLine("*Rule transaction*: the `nft -f -` transaction that swaps the redirect, as the new generation logs it (it includes starting the `nft` process). " +
                        "*Launch to serving*: from the new process's start to its takeover, as it logs it. *Launch to first answer*: from the moment the " +
                        "suite launched the new binary until a client first got a response from it (the timing scenario probes with a new connection every ms; " +
                        "in the rolling runs, the first response the load saw). Percentiles are nearest-rank over the handoffs.")
            .AppendLine()
            .AppendLine("| condition | n | rule transaction p50 / p99 / max | launch to serving p50 / p99 / max | launch to first answer p50 / p99 / max |")
            .AppendLine("|---|---:|---|---|---|");
        foreach (var (label, handoffs) in TimingRows(result))
        {
            var rules = handoffs.Where(h => h.Rule is not null).Select(h => h.Rule!.Value.TotalMilliseconds).ToList();
            var launch = handoffs.Select(h => h.Launch.TotalMilliseconds).ToList();
            var first = handoffs.Where(h => h.First is not null).Select(h => h.First!.Value.TotalMilliseconds).ToList();
            md.AppendLine(Inv($"| {label} | {handoffs.Count} | {Three(rules)} | {Three(launch)} | {Three(first)} |"));
        }

        md.AppendLine();
        var idle = result.Timing?.Handoffs.Where(h => h.IdleHeld > 0).ToList() ?? [];
        if (idle.Count > 0)
        {
            md.AppendLine("With idle connections held on the old generation (opened from the client namespace, half over IPv4 and half over IPv6, each answered once " +
                          "by the old generation and then left idle):").AppendLine()
                .AppendLine("| handoff | idle connections on the old generation | rule transaction | launch to serving | old generation drained in | old generation exited after | idle connections: closed (FIN) / reset / still open / unexpected data |")
                .AppendLine("|---|---:|---:|---:|---:|---:|---|");
            foreach (var h in idle)
            {
                var f = h.Fates;
                md.AppendLine(Inv($"| v{h.Version - 1} → v{h.Version} | {h.IdleHeld:N0} | {Ms(h.RuleTransaction)} | {Ms(h.LaunchToServing)} | {Ms(h.OldDrain)} | ") +
                              Inv($"{(h.OldExited is { } e ? $"{e.TotalSeconds:0.00} s" : "did not exit")} | {(f is null ? "-" : $"{f.ClosedGracefully:N0} / {Bold(f.Reset)} / {f.StillOpen:N0} / {Bold(f.UnexpectedData)}")} |"));
            }

            md.AppendLine();
        }

        if (result.Timing is { } timing)
        {
            var probe = timing.Probe;
            md.AppendLine(Inv($"The probe made {probe.TotalRequests:N0} requests during the timing scenario, {Bold(probe.FailureCount + probe.StaleConnectionsDiscarded)} failed.")).AppendLine();
        }
    }

    private static IEnumerable<(string Label, List<(TimeSpan? Rule, TimeSpan Launch, TimeSpan? First)> Handoffs)> TimingRows(SuiteResult result)
    {
        if (result.Timing is { } timing)
        {
            var plain = timing.Handoffs.Where(h => h.IdleHeld == 0).Select(h => (h.RuleTransaction, h.LaunchToServing, h.FirstServed)).ToList();
            if (plain.Count > 0)
            {
                yield return ("no load (a probe only)", plain);
            }

            var idle = timing.Handoffs.Where(h => h.IdleHeld > 0).Select(h => (h.RuleTransaction, h.LaunchToServing, h.FirstServed)).ToList();
            if (idle.Count > 0)
            {
                yield return (Inv($"{result.Settings.IdleConnections:N0} idle connections on the old generation"), idle);
            }
        }

        foreach (var group in result.SwitchoverRuns.GroupBy(r => (r.Client, r.Mode)))
        {
            var handoffs = group.SelectMany(r => r.FirstServed()).Where(f => f.Handoff.LaunchToServing is not null)
                .Select(f => (f.Handoff.RuleTransaction, f.Handoff.LaunchToServing!.Value, f.FirstServed)).ToList();
            if (handoffs.Count > 0)
            {
                yield return ($"rolling load, {ClientName(group.Key.Client)}, {Modes.Name(group.Key.Mode)}", handoffs);
            }
        }
    }

    public static string ChartKey(ClientKind client, ConnectionMode mode) => $"rolling-{client.ToString().ToLowerInvariant()}-{Modes.Short(mode)}";

    private static double Ratio(IReadOnlyList<OverheadRound> rounds, OverheadVariant variant)
    {
        double Rate(OverheadVariant v)
        {
            var mine = rounds.Where(r => r.Variant == v).ToList();
            var seconds = mine.Sum(r => r.Duration.TotalSeconds);
            return seconds > 0 ? mine.Sum(r => r.Requests) / seconds : double.NaN;
        }

        return Rate(variant) / Rate(OverheadVariant.Direct);
    }

    private static double PerRequest(IReadOnlyList<OverheadRound> rounds, Func<CpuSample, double> pick)
    {
        var requests = rounds.Sum(r => r.Requests);
        return requests == 0 ? 0 : rounds.Sum(r => pick(r.Cpu)) / requests * 1e6;
    }

    private static string ClientName(ClientKind client) => client == ClientKind.Driver ? "our driver" : "wrk";

    private static string Latency(LatencySummary? latency) =>
        latency is null || latency.Count == 0 ? "-" : $"{Ms(latency.P50)} / {Ms(latency.P99)} / {Ms(latency.P999)} / {Ms(latency.Max)}";

    private static string WrkLatency(WrkResult wrk, string percentile) =>
        wrk.LatencyPercentiles.TryGetValue(percentile, out var value) ? Ms(value) : "-";

    private static string Three(List<double> values) =>
        values.Count == 0 ? "-" : $"{Ms(Stats.Percentile(values, 50))} / {Ms(Stats.Percentile(values, 99))} / {Ms(Stats.Max(values))}";

    private static string Ms(TimeSpan? value) => value is { } v ? Ms(v.TotalMilliseconds) : "-";

    private static string Ms(double? milliseconds) => milliseconds switch
    {
        null => "-",
        < 10 => Inv($"{milliseconds:0.00} ms"),
        < 1000 => Inv($"{milliseconds:0.0} ms"),
        _ => Inv($"{milliseconds:0} ms"),
    };

    private static string Bold(long count) => count == 0 ? "0" : Inv($"**{count:N0}**");

    private static string Cell(string text) => text.Replace("|", "\\|", StringComparison.Ordinal).ReplaceLineEndings(" ");

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
