using System.Globalization;
using Switchover.Lab;
using Switchover.Load.Suite;
using Switchover.Processes;

namespace Switchover.Load.Scenarios;

/// <summary>
/// Where the machine's CPU went during one profiled overhead round, from <c>perf record -a -g</c> (cpu-clock samples
/// with kernel call chains): of the busy samples (all but the idle loop; packet processing in an idle CPU's softirq
/// counts as busy), those with <c>nft_do_chain</c> on the stack (every nftables chain the packets traversed: in the
/// Switchover variants only Switchover's own, since its namespace has no other table) and those in conntrack
/// (<c>nf_conntrack_in</c>), and those in the kernel's run of sk_lookup programs (<c>inet_lookup_run_sk_lookup</c>, its
/// IPv6 twin, or the program itself): what the <see cref="OverheadVariant.SkLookup"/> variant's steering costs. It
/// also counts the kernel's TCP socket lookups (<see cref="LookupFunctions"/>), everywhere and inside the chains:
/// TPROXY's lookup assigns the socket to the packet, and the kernel then skips its own (early demux and
/// <c>tcp_v4_rcv</c> take the assigned socket), so the chains' share net of their lookups is what they add, and the
/// lookups' share beside the direct variant's shows whether that holds.
/// </summary>
internal sealed record ChainProfile(OverheadVariant Variant, ClientKind Client, ConnectionMode Mode, long Samples, long Busy, long InChains, long InConntrack)
{
    /// <summary>Busy samples in sk_lookup programs, the kernel's call of them included.</summary>
    public long InSkLookup { get; init; }

    public double SkLookupPercent => Busy > 0 ? 100.0 * InSkLookup / Busy : double.NaN;

    /// <summary>Busy samples in a TCP socket lookup, wherever it was called from.</summary>
    public long InLookups { get; init; }

    /// <summary>Busy samples in a TCP socket lookup called from an nftables chain (TPROXY's).</summary>
    public long InChainLookups { get; init; }

    public double LookupsPercent => Busy > 0 ? 100.0 * InLookups / Busy : double.NaN;

    /// <summary>The chains' share without the socket lookups they did in the kernel's place, in percent.</summary>
    public double ChainsWithoutLookupsPercent => Busy > 0 ? 100.0 * (InChains - InChainLookups) / Busy : double.NaN;

    /// <summary>
    /// The kernel's TCP socket lookups (IPv4 and IPv6, established and listener; Linux 6.x names): what the stack runs
    /// for each arriving segment without an assigned socket, and what TPROXY runs for the packets it steers.
    /// </summary>
    internal static readonly string[] LookupFunctions =
    [
        "__inet_lookup_established", "__inet_lookup_listener", "inet_lhash2_lookup",
        "__inet6_lookup_established", "inet6_lookup_listener", "inet6_lhash2_lookup",
    ];

    /// <summary>What the chains' samples were in: the function <c>nft_do_chain</c> called (itself when in its own code), most first.</summary>
    public IReadOnlyList<(string Function, long Samples)> ChainCallees { get; init; } = [];

    /// <summary>The share of busy CPU samples spent in nftables chains, in percent.</summary>
    public double ChainsPercent => Busy > 0 ? 100.0 * InChains / Busy : double.NaN;

    public double ConntrackPercent => Busy > 0 ? 100.0 * InConntrack / Busy : double.NaN;

    /// <summary>
    /// Profiles the whole machine while <paramref name="load"/> runs for <paramref name="duration"/>. Null (with the
    /// reason in <paramref name="why"/>) when perf is missing or may not sample the kernel here.
    /// </summary>
    public static async Task<(ChainProfile? Profile, string? Why)> MeasureAsync(OverheadVariant variant, ClientKind client, ConnectionMode mode,
        TimeSpan duration, Func<Task> load, CancellationToken cancellationToken)
    {
        var file = Path.Combine(Path.GetTempPath(), $"switchover-perf-{Guid.NewGuid():N}.data");
        try
        {
            var seconds = (duration + TimeSpan.FromSeconds(0.5)).TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture);
            var record = CommandRunner.Instance.TryRunAsync(
                Command.Create("perf", "record", "-a", "-g", "-F", "1999", "-q", "-o", file, "--", "sleep", seconds) with { Timeout = duration + TimeSpan.FromSeconds(60) },
                cancellationToken);
            await Task.Delay(TimeSpan.FromMilliseconds(250), cancellationToken);
            await load();
            var recorded = await record;
            if (recorded.ExitCode != 0)
            {
                return (null, $"perf record failed ({recorded.ExitCode}): {recorded.StandardError.Trim()}");
            }

            var script = await CommandRunner.Instance.TryRunAsync(
                Command.Create("perf", "script", "-i", file, "-F", "comm,ip,sym") with { Timeout = TimeSpan.FromMinutes(2) }, cancellationToken);
            if (script.ExitCode != 0)
            {
                return (null, $"perf script failed ({script.ExitCode}): {script.StandardError.Trim()}");
            }

            var profile = Count(variant, client, mode, script.StandardOutput);
            return profile.Samples == 0 ? (null, "perf recorded no sample") : (profile, null);
        }
        catch (CommandNotFoundException)
        {
            return (null, "perf was not found (apt-get install linux-perf)");
        }
        finally
        {
            File.Delete(file);
            File.Delete(file + ".old");
        }
    }

    /// <summary>
    /// Counts <c>perf script -F comm,ip,sym</c> output: one block a sample (its command, then one frame a line,
    /// "address symbol", innermost first), blocks separated by an empty line.
    /// </summary>
    internal static ChainProfile Count(OverheadVariant variant, ClientKind client, ConnectionMode mode, string script)
    {
        long samples = 0, busy = 0, chains = 0, conntrack = 0, skLookup = 0, lookups = 0, chainLookups = 0;
        var callees = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var block in script.Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var frames = block.Split('\n', StringSplitOptions.TrimEntries).Skip(1)
                .Select(f => f.IndexOf(' ', StringComparison.Ordinal) is var space and >= 0 ? f[(space + 1)..] : f).ToList();
            if (frames.Count == 0)
            {
                continue;
            }

            samples++;
            bool Has(string prefix) => frames.Any(f => f.StartsWith(prefix, StringComparison.Ordinal));
            var softirq = Has("handle_softirqs") || Has("__do_softirq") || Has("net_rx_action");
            if (!softirq && (Has("do_idle") || Has("cpuidle_enter") || Has("default_idle")))
            {
                continue;
            }

            busy++;
            var chain = frames.FindIndex(f => f.StartsWith("nft_do_chain", StringComparison.Ordinal));
            var lookup = frames.FindIndex(f => LookupFunctions.Any(l => f.StartsWith(l, StringComparison.Ordinal)));
            if (lookup >= 0)
            {
                lookups++;
            }

            if (chain >= 0)
            {
                chains++;
                var callee = chain == 0 ? frames[0] : frames[chain - 1];
                callees[callee] = callees.GetValueOrDefault(callee) + 1;
                if (lookup >= 0 && lookup < chain)
                {
                    chainLookups++;
                }
            }

            if (Has("nf_conntrack_in"))
            {
                conntrack++;
            }

            if (Has("inet_lookup_run_sk_lookup") || Has("inet6_lookup_run_sk_lookup") || frames.Any(f => f.StartsWith("bpf_prog_", StringComparison.Ordinal) && f.EndsWith("_switchover_lkp", StringComparison.Ordinal)))
            {
                skLookup++;
            }
        }

        return new ChainProfile(variant, client, mode, samples, busy, chains, conntrack)
        {
            InSkLookup = skLookup,
            InLookups = lookups,
            InChainLookups = chainLookups,
            ChainCallees = [.. callees.OrderByDescending(c => c.Value).Take(6).Select(c => (c.Key, c.Value))],
        };
    }
}
