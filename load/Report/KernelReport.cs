using System.Globalization;
using System.Text;
using Switchover.Load.Scenarios;

namespace Switchover.Load.Report;

/// <summary>The kernel scenario's part of the report: headline lines and its section.</summary>
internal static class KernelReport
{
    public static IEnumerable<string> Headlines(KernelResult kernel)
    {
        foreach (var phase in new[] { "no load", "rolling load" })
        {
            var nl = kernel.Transactions.FirstOrDefault(t => t.Label == $"netlink, {phase}");
            var lib = kernel.Transactions.FirstOrDefault(t => t.Label == $"libnftables, {phase}");
            var program = kernel.Transactions.FirstOrDefault(t => t.Label == $"nft program, {phase}");
            if (lib is not null && program is not null)
            {
                yield return (nl is null ? string.Empty : Inv($"Rule transaction, {phase}: our netlink batch p50 **{nl.P50:0.000} ms**, p99 **{nl.P99:0.000} ms** (target p99 ≤ 1 ms), CPU p50 {nl.CpuP50:0.000} ms, p99 {nl.CpuP99:0.000} ms; ")) +
                             Inv($"{(nl is null ? $"Rule transaction, {phase}: " : string.Empty)}libnftables p50 **{lib.P50:0.000} ms**, p99 **{lib.P99:0.000} ms**, CPU p50 {lib.CpuP50:0.000} ms, p99 {lib.CpuP99:0.000} ms; ") +
                             Inv($"the nft program p50 {program.P50:0.0} ms, p99 {program.P99:0.0} ms") +
                             (program.CpuP50 is { } cpu ? Inv($", CPU p50 {cpu:0.0} ms") : string.Empty) + Inv($" (n = {lib.Count} each, alternating).");
            }
        }

        foreach (var exec in kernel.Execs)
        {
            yield return Inv($"Programs started during one handoff and drain, {exec.Configuration}: **{exec.NewGeneration + exec.OldGeneration}**") +
                         (exec.Programs.Count > 0 ? " (" + string.Join(", ", exec.Programs.Select(p => Inv($"{p.Value} {p.Key}"))) + ")" : string.Empty) + ".";
        }

        foreach (var group in kernel.Polls.GroupBy(p => p.Idle))
        {
            yield return Inv($"Drain poll with {group.Key:N0} idle connections: ") +
                         string.Join("; ", group.Select(p => Inv($"{p.Method} CPU {p.CpuMedianMs:0.000} ms"))) + " (median per poll; target < 1 ms).";
        }

        var firstSwitchover = Stats.Percentile(kernel.Launches.Where(l => l.Variant == "Switchover").Select(l => l.FirstAnswerMs), 50);
        var firstDisabled = Stats.Percentile(kernel.Launches.Where(l => l.Variant == "Mode=Disabled").Select(l => l.FirstAnswerMs), 50);
        if (firstSwitchover is not null && firstDisabled is not null)
        {
            yield return Inv($"Launch to first answer: Switchover {firstSwitchover:0} ms, the same app with Mode=Disabled {firstDisabled:0} ms: **{firstSwitchover - firstDisabled:+0;-0} ms** (median; goal ≤ 50 ms; on a machine this busy the two medians differ by more than that from run to run).");
        }

        var switchover = Median(kernel.Memory, "Switchover");
        var disabled = Median(kernel.Memory, "Mode=Disabled");
        if (switchover is not null && disabled is not null)
        {
            yield return Inv($"Resident memory after 200 requests: Switchover {switchover:0.0} MB, Mode=Disabled {disabled:0.0} MB: **+{switchover - disabled:0.0} MB** (median of {kernel.Memory.Count(m => m.Variant == "Switchover")}; target ≤ 5 MB); ") +
                         Inv($"with the nft and conntrack programs instead of libnftables {Median(kernel.Memory, "Switchover with NftPath, ConntrackPath"):0.0} MB.");
        }
    }

    public static void Section(StringBuilder md, KernelResult kernel)
    {
        md.AppendLine("## Kernel interfaces").AppendLine()
            .AppendLine("Each piece of the handoff's kernel work next to the way Switchover did it before, in the same run and lab. Rule transactions: " +
                        "a two-generation table applied back and forth on the server namespace's thread, in turn through our own nf_tables netlink batch, libnftables in this process and " +
                        "`nft -f -` (the first of the three rotates each round), each timed from the call to the kernel's answer (Stopwatch around NftClient.ApplyAsync). Under rolling load: the same, " +
                        "while generations of the echo app hand off every interval under keep-alive load.").AppendLine()
            .AppendLine("| transport, phase | n | p50 | p99 | max | CPU p50 | CPU p99 |").AppendLine("|---|---|---|---|---|---|---|");
        foreach (var t in kernel.Transactions)
        {
            md.AppendLine(Inv($"| {t.Label} | {t.Count} | {t.P50:0.000} ms | {t.P99:0.000} ms | {t.Max:0.000} ms | {Ms(t.CpuP50)} | {Ms(t.CpuP99)} |"));
        }

        md.AppendLine().AppendLine(Inv($"The rolling load made {kernel.LoadRequests:N0} requests, {kernel.LoadFailures} failed.")).AppendLine()
            .AppendLine("Programs started (`strace -f -e trace=execve -p PID`, attached to the old generation before the launch and to the new one at its launch, " +
                        "until the old one has exited):").AppendLine()
            .AppendLine("| configuration | new generation | old generation | programs |").AppendLine("|---|---|---|---|");
        foreach (var e in kernel.Execs)
        {
            md.AppendLine(Inv($"| {e.Configuration} | {e.NewGeneration} | {e.OldGeneration} | {(e.Programs.Count == 0 ? "none" : string.Join(", ", e.Programs.Select(p => Inv($"{p.Value} {p.Key}"))))} |"));
        }

        md.AppendLine().AppendLine("One drain poll (the accept queues of the generation's private ports, and its half-open flows), run on the server namespace's thread " +
                                   "while the idle connections are held on the generation; CPU is the thread's user + system time plus that of the programs it waited for:")
            .AppendLine().AppendLine("| idle connections | method | polls | CPU median | CPU max | wall median |").AppendLine("|---|---|---|---|---|---|");
        foreach (var p in kernel.Polls)
        {
            md.AppendLine(Inv($"| {p.Idle:N0} | {p.Method} | {p.Polls} | {p.CpuMedianMs:0.000} ms | {p.CpuMaxMs:0.000} ms | {p.WallMedianMs:0.000} ms |"));
        }

        md.AppendLine().AppendLine(Inv($"Handoffs with the idle connections held on the old generation (launch to serving without them, median of 3: {kernel.PlainLaunchToServingMs:0} ms):"))
            .AppendLine().AppendLine("| idle | held on old | launch to serving | old's drain | old exited after launch | old exited after its clients closed them (goal 2 s) | after the quiet period: FIN / reset / open |").AppendLine("|---|---|---|---|---|---|---|");
        foreach (var h in kernel.IdleHandoffs)
        {
            md.AppendLine(Inv($"| {h.Idle:N0} | {h.HeldOnOld:N0} | {h.LaunchToServingMs:0} ms | {h.DrainMs:0} ms | {h.ExitedSeconds:0.0} s | {h.ExitedAfterLastCloseSeconds:0.00} s | {h.Fates.ClosedGracefully:N0} / {h.Fates.Reset} / {h.Fates.StillOpen} |"));
        }

        if (kernel.Launches.Count > 0)
        {
            var switchover = kernel.Launches.Where(l => l.Variant == "Switchover").ToList();
            var disabled = kernel.Launches.Where(l => l.Variant == "Mode=Disabled").ToList();
            string[] phases = ["host built", "Kestrel bound", "checks (nf_tables GETGEN, ctnetlink)", "registered (transaction, state)", "ready (health, probe answered)", "took over (transaction applied, state written, previous signalled)", "of which the rule transaction"];
            md.AppendLine().AppendLine("Launch to serving: the generation's own waterfall (ms after its process started, as it logs it), and from the suite starting the " +
                                       "process until a client first got an answer from it, against the same app with Mode=Disabled (median of each):")
                .AppendLine().AppendLine("| step | ms (median) |").AppendLine("|---|---|");
            for (var i = 0; i < phases.Length; i++)
            {
                var values = switchover.Where(s => s.Waterfall is { Count: > 6 }).Select(s => s.Waterfall![i]).ToList();
                md.AppendLine(Inv($"| {phases[i]} | {Stats.Percentile(values, 50):0.0} |"));
            }

            var added = Stats.Percentile(switchover.Select(s => s.FirstAnswerMs), 50) - Stats.Percentile(disabled.Select(s => s.FirstAnswerMs), 50);
            md.AppendLine(Inv($"| launch to first answer, Switchover (new version on the public port) | {Stats.Percentile(switchover.Select(s => s.FirstAnswerMs), 50):0} |"))
                .AppendLine(Inv($"| launch to first answer, Mode=Disabled (its own port) | {Stats.Percentile(disabled.Select(s => s.FirstAnswerMs), 50):0} |"))
                .AppendLine(Inv($"| **added by Switchover** (goal ≤ 50 ms) | **{added:+0;-0}** |"));
        }

        foreach (var note in kernel.Notes)
        {
            md.AppendLine().AppendLine("Note: " + note);
        }

        md.AppendLine().AppendLine("Resident memory (VmRSS) after 200 keep-alive requests, a new generation each round, alternating with the same app bound directly:")
            .AppendLine().AppendLine("| round | Switchover | Switchover with NftPath, ConntrackPath (no libnftables) | Mode=Disabled |").AppendLine("|---|---|---|---|");
        foreach (var round in kernel.Memory.GroupBy(m => m.Round))
        {
            md.AppendLine(Inv($"| {round.Key} | {Mb(round, "Switchover")} | {Mb(round, "Switchover with NftPath, ConntrackPath")} | {Mb(round, "Mode=Disabled")} |"));
        }

        md.AppendLine();
    }

    private static double? Median(IReadOnlyList<MemorySample> samples, string variant) =>
        Stats.Percentile(samples.Where(s => s.Variant == variant).Select(s => s.RssMb), 50);

    private static string Mb(IEnumerable<MemorySample> round, string variant) =>
        round.FirstOrDefault(m => m.Variant == variant) is { } m ? Inv($"{m.RssMb:0.0} MB") : "-";

    private static string Ms(double? value) => value is { } v ? Inv($"{v:0.000} ms") : "-";

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
