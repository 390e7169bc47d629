using System.CommandLine;

namespace Switchover.Cli;

/// <summary><c>switchover status</c>: what each namespace's state says, and what is true of it now.</summary>
internal static class StatusCommand
{
    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "every namespace asked about was read completely"),
        (ExitCodes.Failure, "a namespace has no state or a corrupt state file, no namespace was found, or nft or conntrack " +
            "failed; what could be read is still printed, each problem goes to stderr and, with --json, into 'errors'"),
        (ExitCodes.Usage, "the command line is wrong"),
    ]);

    public static Command Create(ToolOptions tools)
    {
        var ns = CommonOptions.Namespace("Show only this namespace (default: every namespace under the state directory).", required: false);
        var stateDir = CommonOptions.StateDirectory();
        var json = new Option<bool>("--json")
        {
            Description = "Print one JSON document (camelCase; 'errors' lists every problem, and is empty exactly when the exit code is 0).",
        };
        var command = new Command("status", "Show the public endpoints, nft table, generations and live connections of each namespace.")
        {
            ns,
            stateDir,
            json,
        };

        command.SetAction(async (parseResult, cancellationToken) =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            await RepairAsync(parseResult.GetValue(stateDir)!, parseResult.GetValue(ns), parseResult.GetValue(tools.Nft)!, error, cancellationToken)
                .ConfigureAwait(false);
            var collector = StatusCollector.Create(parseResult.GetValue(tools.Nft)!, parseResult.GetValue(tools.Conntrack)!);
            var report = await collector.CollectAsync(parseResult.GetValue(stateDir)!, parseResult.GetValue(ns), cancellationToken)
                .ConfigureAwait(false);

            if (parseResult.GetValue(json))
            {
                await output.WriteLineAsync(StatusJson.Serialize(report)).ConfigureAwait(false);
            }
            else
            {
                await output.WriteAsync(StatusTable.Render(report)).ConfigureAwait(false);
            }

            foreach (var problem in report.Errors)
            {
                await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(problem.Message)).ConfigureAwait(false);
            }

            return report.Errors.Count == 0 ? ExitCodes.Success : ExitCodes.Failure;
        });
        return command;
    }

    /// <summary>
    /// Reconciles each namespace before it is shown (what a generation does before it acts): dead generations go, a
    /// dead active one's ports go to the previous generation still in its rollback window or are left unsteered, and an
    /// interrupted transaction is applied again. Skipped, with a note, where this user may not (the state is shown as is).
    /// </summary>
    private static async Task RepairAsync(string stateRoot, Switchover.NamespaceName? only, string nftPath, TextWriter error, CancellationToken cancellationToken)
    {
        IReadOnlyList<Switchover.NamespaceName> names;
        try
        {
            names = only is not null ? [only]
                : [.. Switchover.State.StateStore.List(stateRoot).Where(e => e.NetworkNamespace == Switchover.State.NetworkNamespaces.Current).Select(e => e.Name)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }

        foreach (var name in names)
        {
            var handoff = Handoff.Create(stateRoot, name, TimeSpan.FromSeconds(2), nftPath);
            if (!handoff.Store.Exists)
            {
                continue;
            }

            try
            {
                var repair = await handoff.RepairAsync(cancellationToken).ConfigureAwait(false);
                if (repair.Applied || repair.StaleRemoved.Count > 0)
                {
                    var dead = string.Join(", ", repair.StaleRemoved.Select(g => $"{g.Id} (pid {g.Pid})"));
                    var now = repair.NamespaceRemoved ? "no generation is left: table and state removed"
                        : repair.Promoted is { } p ? $"generation {p.Id} (pid {p.Pid}) holds the public ports again"
                        : repair.Active is { } a ? $"generation {a.Id} holds the public ports"
                        : "the public ports are not steered until the next generation takes over";
                    await error.WriteLineAsync($"switchover: repaired namespace '{name}': " +
                        (dead.Length > 0 ? $"removed dead generation(s) {dead}; " : string.Empty) + now).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is Switchover.State.StateException or Switchover.Netfilter.NftException)
            {
                await error.WriteLineAsync($"switchover: note: namespace '{name}' was shown without repair: {ToolErrors.OneLine(e.Message)}").ConfigureAwait(false);
            }
        }
    }
}
