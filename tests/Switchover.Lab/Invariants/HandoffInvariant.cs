using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Switchover.State;

namespace Switchover.Lab;

/// <summary>A socket listening on TCP inside a network namespace, and the processes that hold it.</summary>
public sealed record ListeningSocket(int Port, IReadOnlyList<int> Pids);

/// <summary>One steering rule of the namespace's table as the kernel holds it.</summary>
/// <param name="Kind">"tproxy" or "redirect".</param>
public sealed record SteerRule(string Chain, string Kind, int? PublicPort, int TargetPort, long? GenerationId, int? Pid);

/// <summary>What <see cref="HandoffInvariant"/> found; <see cref="Holds"/> when there is no violation.</summary>
public sealed record InvariantReport(
    string Namespace,
    IReadOnlyList<string> Violations,
    NamespaceState? State,
    IReadOnlyList<SteerRule> Steers,
    IReadOnlyList<int> GuardedPorts,
    bool TablePresent)
{
    public bool Holds => Violations.Count == 0;

    /// <summary>How long <see cref="HandoffInvariant.WaitUntilHoldsAsync"/> waited for it to hold.</summary>
    public TimeSpan Waited { get; init; }

    public override string ToString() => Holds
        ? $"invariant holds in namespace '{Namespace}' ({Steers.Count} steer(s), guard {{{string.Join(", ", GuardedPorts)}}})"
        : $"invariant violated in namespace '{Namespace}':\n  - " + string.Join("\n  - ", Violations) +
          $"\n  state: {(State is null ? "(none)" : string.Join("; ", State.Generations.Select(g => $"{g.Id} pid {g.Pid} {g.State}")))}" +
          $"\n  steers: {string.Join("; ", Steers)}\n  guard: {{{string.Join(", ", GuardedPorts)}}}";

    /// <summary>Throws with the whole report when a violation was found.</summary>
    public InvariantReport ThrowIfViolated() => Holds ? this : throw new InvalidOperationException(ToString());
}

/// <summary>
/// The handoff invariant of one Switchover namespace, checked against the machine: the state file, the kernel's
/// table (<c>nft -j list table</c>), live processes (/proc, start times), and the listening sockets (<c>ss -ltnpH</c>)
/// of the network namespace. It holds when
/// <list type="bullet">
/// <item>the state was read and no nft transaction is left pending;</item>
/// <item>at most one live generation is active, and every steered public port steers to a listening socket, held by
/// that process, of the live, active generation of this namespace (a port steered to two generations is a violation);</item>
/// <item>no rule and no guard belongs to a dead or unknown generation (nothing a generation left can capture traffic);</item>
/// <item>state and kernel agree: the live active generation's public ports are steered, and a table without state, or
/// state without a table, is a violation.</item>
/// </list>
/// Detection takes time (a pidfd wakes the previous generation within milliseconds; a repair without it waits for
/// the next operation): call <see cref="WaitUntilHoldsAsync"/> with the delay you claim.
/// </summary>
public static partial class HandoffInvariant
{
    public static async Task<InvariantReport> CheckAsync(NetworkNamespace host, string @namespace, CancellationToken cancellationToken,
        string stateRoot = StateStore.DefaultRoot)
    {
        ArgumentNullException.ThrowIfNull(host);
        var name = NamespaceName.Parse(@namespace);
        NamespaceState? state = null;
        string? stateError = null;
        try
        {
            state = new StateStore(stateRoot, name, host.Inode).ReadUnlocked();
        }
        catch (StateException e)
        {
            stateError = e.Message;
        }

        var table = await host.TryRunAsync("nft", ["-j", "list", "table", "inet", name.TableName], cancellationToken).ConfigureAwait(false);
        var listening = await host.RunAsync("ss", ["-ltnpH"], cancellationToken).ConfigureAwait(false);
        var report = Evaluate(@namespace, state, table.ExitCode == 0 ? table.StandardOutput : null, ParseListening(listening.StandardOutput), p => p.IsAlive());
        return stateError is null ? report : report with { Violations = [$"the state cannot be read: {stateError}", .. report.Violations] };
    }

    /// <summary>Checks until the invariant holds or <paramref name="within"/> has passed; returns the last report and how long it took.</summary>
    public static async Task<InvariantReport> WaitUntilHoldsAsync(NetworkNamespace host, string @namespace, TimeSpan within, CancellationToken cancellationToken,
        string stateRoot = StateStore.DefaultRoot)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            var report = await CheckAsync(host, @namespace, cancellationToken, stateRoot).ConfigureAwait(false);
            if (report.Holds || stopwatch.Elapsed >= within)
            {
                return report with { Waited = stopwatch.Elapsed };
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The pure part: violations of the invariant given what was read.</summary>
    public static InvariantReport Evaluate(string @namespace, NamespaceState? state, string? tableJson, IReadOnlyList<ListeningSocket> listening,
        Func<ProcessIdentity, bool> isAlive)
    {
        ArgumentNullException.ThrowIfNull(listening);
        ArgumentNullException.ThrowIfNull(isAlive);
        var violations = new List<string>();
        var (steers, guarded) = tableJson is null ? ([], []) : ParseTable(tableJson);
        var generations = state?.Generations ?? [];
        var live = generations.Where(g => isAlive(g.Process)).ToList();
        var active = live.Where(g => g.State == GenerationState.Active).ToList();

        if (state?.TransactionPending == true)
        {
            violations.Add("an nft transaction was interrupted and its table not yet applied again (transactionPending)");
        }

        if (active.Count > 1)
        {
            violations.Add($"{active.Count} live generations are active: {string.Join(", ", active.Select(g => g.Id))}");
        }

        if (tableJson is not null && generations.Count == 0)
        {
            violations.Add("the table exists but no generation is recorded (left behind)");
        }

        if (tableJson is null && live.Count > 0)
        {
            violations.Add($"live generations {string.Join(", ", live.Select(g => g.Id))} are recorded but the table is absent");
        }

        foreach (var steer in steers)
        {
            var owner = generations.FirstOrDefault(g => g.Id == steer.GenerationId);
            var what = $"{steer.Kind} of public port {steer.PublicPort} to :{steer.TargetPort} (gen={steer.GenerationId} pid={steer.Pid}, chain {steer.Chain})";
            if (owner is null)
            {
                violations.Add($"{what} belongs to no recorded generation");
                continue;
            }

            if (!isAlive(owner.Process))
            {
                violations.Add($"{what} steers to dead generation {owner.Id} (pid {owner.Pid})");
                continue;
            }

            if (owner.State != GenerationState.Active)
            {
                violations.Add($"{what} steers to generation {owner.Id}, which is {owner.State}, not active");
            }

            if (owner.Ports.All(p => p.PrivatePort != steer.TargetPort))
            {
                violations.Add($"{what}: :{steer.TargetPort} is not a private port of generation {owner.Id}");
            }

            if (!listening.Any(l => l.Port == steer.TargetPort && l.Pids.Contains(owner.Pid)))
            {
                violations.Add($"{what}: no socket of pid {owner.Pid} listens on :{steer.TargetPort}");
            }
        }

        foreach (var group in steers.Where(s => s.Chain != "nat_output").GroupBy(s => s.PublicPort))
        {
            if (group.Select(s => s.GenerationId).Distinct().Count() > 1)
            {
                violations.Add($"public port {group.Key} is steered to several generations: {string.Join(", ", group.Select(s => s.GenerationId).Distinct())}");
            }
        }

        var livePrivate = live.SelectMany(g => g.Ports).Select(p => p.PrivatePort).ToHashSet();
        foreach (var port in guarded.Where(p => !livePrivate.Contains(p)))
        {
            var dead = generations.FirstOrDefault(g => g.Ports.Any(p => p.PrivatePort == port));
            violations.Add(dead is null
                ? $"guard on :{port}, which is no private port of a recorded generation"
                : $"guard on :{port} of dead generation {dead.Id} (pid {dead.Pid}): it drops replies to outbound connections from that port");
        }

        if (active.Count == 1 && tableJson is not null)
        {
            var unsteered = active[0].Ports.Where(p => !steers.Any(s => s.GenerationId == active[0].Id && s.PublicPort == p.PublicPort)).ToList();
            if (unsteered.Count > 0)
            {
                violations.Add($"state says generation {active[0].Id} is active, but the kernel does not steer public port(s) {string.Join(", ", unsteered.Select(p => p.Public))} to it");
            }
        }

        return new InvariantReport(@namespace, violations, state, steers, guarded, tableJson is not null);
    }

    /// <summary>The steering rules and the guarded ports of an <c>nft -j list table</c> document.</summary>
    public static (IReadOnlyList<SteerRule> Steers, IReadOnlyList<int> Guarded) ParseTable(string json)
    {
        var steers = new List<SteerRule>();
        var guarded = new SortedSet<int>();
        using var document = JsonDocument.Parse(json);
        foreach (var item in document.RootElement.GetProperty("nftables").EnumerateArray())
        {
            if (!item.TryGetProperty("rule", out var rule))
            {
                continue;
            }

            var chain = rule.GetProperty("chain").GetString()!;
            var comment = rule.TryGetProperty("comment", out var c) ? c.GetString() : null;
            int? dport = null;
            IReadOnlyList<int> dports = [];
            string? kind = null;
            int? target = null;
            var drops = false;
            foreach (var expression in rule.GetProperty("expr").EnumerateArray())
            {
                if (expression.TryGetProperty("match", out var match) && match.GetProperty("left").TryGetProperty("payload", out var payload)
                    && payload.GetProperty("field").GetString() == "dport")
                {
                    var right = match.GetProperty("right");
                    dports = right.ValueKind == JsonValueKind.Number ? [right.GetInt32()]
                        : right.TryGetProperty("set", out var set) ? [.. set.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.Number).Select(e => e.GetInt32())]
                        : [];
                    dport = dports.Count == 1 ? dports[0] : null;
                }
                else if (expression.TryGetProperty("tproxy", out var tproxy))
                {
                    (kind, target) = ("tproxy", tproxy.GetProperty("port").GetInt32());
                }
                else if (expression.TryGetProperty("redirect", out var redirect))
                {
                    (kind, target) = ("redirect", redirect.GetProperty("port").GetInt32());
                }
                else if (expression.TryGetProperty("drop", out _))
                {
                    drops = true;
                }
            }

            if (kind is not null && target is { } port)
            {
                var owner = comment is null ? null : CommentPattern().Match(comment);
                steers.Add(new SteerRule(chain, kind, dport, port,
                    owner is { Success: true } ? long.Parse(owner.Groups[1].Value, CultureInfo.InvariantCulture) : null,
                    owner is { Success: true } ? int.Parse(owner.Groups[2].Value, CultureInfo.InvariantCulture) : null));
            }
            else if (drops)
            {
                guarded.UnionWith(dports);
            }
        }

        return (steers, [.. guarded]);
    }

    /// <summary>Parses <c>ss -ltnpH</c>: the local port of each listening socket and the pids that hold it.</summary>
    public static IReadOnlyList<ListeningSocket> ParseListening(string ss)
    {
        ArgumentNullException.ThrowIfNull(ss);
        var sockets = new List<ListeningSocket>();
        foreach (var line in ss.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 4)
            {
                continue;
            }

            var local = fields[3];
            var colon = local.LastIndexOf(':');
            if (colon < 0 || !int.TryParse(local.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
            {
                continue;
            }

            sockets.Add(new ListeningSocket(port, [.. PidPattern().Matches(line).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))]));
        }

        return sockets;
    }

    [GeneratedRegex(@"gen=(\d+) pid=(\d+)")]
    private static partial Regex CommentPattern();

    [GeneratedRegex(@"pid=(\d+)")]
    private static partial Regex PidPattern();
}
