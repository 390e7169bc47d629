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
            var collector = StatusCollector.Create(parseResult.GetValue(tools.Nft), parseResult.GetValue(tools.Conntrack));
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
}
