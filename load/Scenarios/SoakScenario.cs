using System.Globalization;
using System.Text;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Scenarios;

/// <summary>
/// The randomized fault soak (issue 9): in one lab, under continuous keep-alive and new-connection load on every
/// path, rounds of handoffs with a fault each as a seeded plan says (see <see cref="Soak"/> in the lab). The
/// headline numbers are the unattributed failures and the invariant violations: both must be 0.
/// </summary>
internal sealed class SoakScenario(SuiteSettings settings, Progress progress)
{
    public async Task<SoakResult> RunAsync(CancellationToken cancellationToken)
    {
        await using var lab = await Labs.CreateAsync(cancellationToken);
        progress.Line($"soak: lab {lab.Server.Name} <-> {lab.Client.Name}");
        return await Soak.RunAsync(lab, new SoakOptions
        {
            Seed = settings.SoakSeed,
            Rounds = settings.SoakRounds,
            MaxDuration = settings.SoakDuration,
            ReplayCommand = ReplayCommand(settings),
            Log = progress.Line,
        }, cancellationToken);
    }

    /// <summary>The command that runs the same plan again.</summary>
    public static string ReplayCommand(SuiteSettings settings) =>
        string.Create(CultureInfo.InvariantCulture,
            $"dotnet run -c Release --project load -- --scenarios soak --seed {settings.SoakSeed} --soak-rounds {settings.SoakRounds} --soak-minutes {settings.SoakDuration.TotalMinutes:0.##}");

    /// <summary>The soak section of the report.</summary>
    public static void Render(StringBuilder md, SoakResult? result)
    {
        if (result is null)
        {
            return;
        }

        md.AppendLine("## Soak: randomized faults during handoffs").AppendLine()
            .AppendLine("One lab, one namespace, continuous load from our driver (keep-alive and a new connection per request, 2 workers on each of four " +
                        "paths: network v4/v6, localhost v4/v6). Each round hands off to a new generation with the fault, step and delay of the seeded plan; " +
                        "then the generations settle, `switchover status` repairs what nothing watched, the invariant must hold (5 s), the next deploy must " +
                        "take over and the invariant must hold again. *Before the repair* is the violation count right after the generations settled " +
                        "(a dead generation that nothing watched keeps its rule and guard until the next operation; not counted). A failed request is " +
                        "attributed when it falls in the window of a fault that killed a serving process (from the injection to 1 s after the recovery).")
            .AppendLine()
            .AppendLine(result.ToMarkdown());
    }

    /// <summary>The soak's failed requests for failures.log, each with its attribution.</summary>
    public static void Log(StringBuilder log, SoakResult? result)
    {
        if (result is null)
        {
            return;
        }

        log.Append(CultureInfo.InvariantCulture, $"# soak seed {result.Seed}: {result.Attributed} attributed, {result.Unattributed} unattributed; replay: {result.ReplayCommand}\n");
        foreach (var failure in result.Failures.Take(10_000))
        {
            log.Append(failure.Failure).Append(" <- ").Append(failure.Window?.Label ?? "UNATTRIBUTED").Append('\n');
        }

        log.Append('\n');
    }
}
