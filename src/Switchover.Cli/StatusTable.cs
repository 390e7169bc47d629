using System.Globalization;
using System.Text;

namespace Switchover.Cli;

/// <summary>The human form of a <see cref="StatusReport"/>: a short header and an aligned table per namespace.</summary>
internal static class StatusTable
{
    private static readonly string[] Header = ["GEN", "PID", "STATE", "AGE", "PUBLIC", "PRIVATE", "ESTABLISHED", "HALF-OPEN", "CLOSING"];

    // Numbers are right-aligned so that they line up by digit.
    private static readonly bool[] RightAligned = [true, true, false, false, true, true, true, true, true];

    /// <summary>Renders the namespaces of the report (its errors go to stderr separately). Lines end with '\n'.</summary>
    public static string Render(StatusReport report)
    {
        var sb = new StringBuilder();
        foreach (var ns in report.Namespaces)
        {
            if (sb.Length > 0)
            {
                sb.Append('\n');
            }

            Render(sb, ns);
        }

        return sb.ToString();
    }

    /// <summary>"42s", "3m05s", "2h05m", "3d04h": two units at most, enough to tell a fresh generation from a stuck one.</summary>
    public static string FormatAge(long seconds)
    {
        var age = TimeSpan.FromSeconds(Math.Max(0, seconds));
        return age.TotalSeconds < 60 ? Invariant($"{age.Seconds}s")
            : age.TotalMinutes < 60 ? Invariant($"{age.Minutes}m{age.Seconds:00}s")
            : age.TotalHours < 24 ? Invariant($"{age.Hours}h{age.Minutes:00}m")
            : Invariant($"{(long)age.TotalDays}d{age.Hours:00}h");
    }

    private static void Render(StringBuilder sb, NamespaceStatus ns)
    {
        sb.Append("namespace ").Append(ns.Name).Append('\n');
        sb.Append("  public  ");
        if (ns.PublicEndpoints.Count == 0)
        {
            sb.Append("none (no active generation)");
        }
        else
        {
            sb.AppendJoin(", ", ns.PublicEndpoints.Select(e => Invariant($"{e.Endpoint} -> :{e.PrivatePort}")))
                .Append(Invariant($" (generation {ns.PublicEndpoints[0].Generation})"));
        }

        sb.Append('\n');
        var presence = ns.TablePresent switch
        {
            true => "present",
            false => "absent",
            null => "unknown (nft failed)",
        };
        sb.Append("  table   ").Append(ns.Table).Append(' ').Append(presence).Append('\n');
        sb.Append("  state   ").Append(ns.StateDirectory).Append('\n');
        if (ns.Generations.Count == 0)
        {
            sb.Append("  no generations\n");
            return;
        }

        var rows = new List<string[]> { Header };
        foreach (var g in ns.Generations)
        {
            var first = true;
            foreach (var port in g.Ports.DefaultIfEmpty())
            {
                // A generation with several ports takes one row per port; only the first names the generation.
                rows.Add([
                    first ? Invariant($"{g.Id}") : string.Empty,
                    first ? Invariant($"{g.Pid}") : string.Empty,
                    first ? StateName(g.State) : string.Empty,
                    first ? FormatAge(g.AgeSeconds) : string.Empty,
                    port is null ? "-" : Invariant($"{port.PublicPort}"),
                    port is null ? "-" : Invariant($"{port.PrivatePort}"),
                    Count(port?.Connections?.Established),
                    Count(port?.Connections?.HalfOpen),
                    Count(port?.Connections?.Closing),
                ]);
                first = false;
            }
        }

        AppendAligned(sb, rows, indent: "  ");
        foreach (var g in ns.Generations)
        {
            if (g.RollbackUntil is { } until)
            {
                sb.Append(Invariant($"  generation {g.Id} can take the ports back until {until:u} (switchover rollback --namespace {ns.Name})\n"));
            }

            if (g.SignalError is { } error)
            {
                sb.Append(Invariant($"  generation {g.Id} was not told that it was superseded: {error}\n"));
            }
        }
    }

    private static void AppendAligned(StringBuilder sb, List<string[]> rows, string indent)
    {
        var widths = Enumerable.Range(0, Header.Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        foreach (var row in rows)
        {
            var line = new StringBuilder(indent);
            for (var c = 0; c < row.Length; c++)
            {
                if (c > 0)
                {
                    line.Append("  ");
                }

                line.Append(RightAligned[c] ? row[c].PadLeft(widths[c]) : row[c].PadRight(widths[c]));
            }

            sb.Append(line.ToString().TrimEnd()).Append('\n');
        }
    }

    private static string StateName(GenerationStatusKind state) => state switch
    {
        GenerationStatusKind.Starting => "starting",
        GenerationStatusKind.Active => "active",
        GenerationStatusKind.Draining => "draining",
        GenerationStatusKind.Dead => "dead",
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, "Unknown generation state."),
    };

    private static string Count(int? count) => count is { } n ? Invariant($"{n}") : "-";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
