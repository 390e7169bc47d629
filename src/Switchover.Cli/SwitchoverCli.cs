using System.CommandLine;
using System.CommandLine.Invocation;

namespace Switchover.Cli;

/// <summary>The command tree of the <c>switchover</c> tool, and the mapping of parse errors to exit code 2.</summary>
internal static class SwitchoverCli
{
    public static RootCommand CreateRootCommand()
    {
        var tools = new ToolOptions();
        var status = StatusCommand.Create(tools);
        var cleanup = CleanupCommand.Create(tools);
        var doctor = Doctor.DoctorCommand.Create(tools);
        var migrate = MigrateCommand.Create();
        var deploy = DeployCommand.Create();
        var rollback = RollbackCommand.Create(tools);
        var agent = AgentCommand.Create(tools);
        var root = new RootCommand(
            "Deploy, inspect, check and clean up Switchover namespaces: the nftables table inet switchover_<namespace> and the state under " +
            "/run/switchover/<namespace>@<netns>/ that handoffs between generations of a server use.")
        {
            tools.Nft,
            tools.Conntrack,
            deploy,
            rollback,
            status,
            cleanup,
            doctor,
            migrate,
            TunnelCommand.Create(),
            agent,
        };
        HelpWithExitCodesAction.Install(root, new Dictionary<Command, ExitCodeHelp>
        {
            [root] = new([
                (ExitCodes.Success, "success"),
                (ExitCodes.Failure, "the command ran but failed or found a problem; see 'switchover COMMAND --help'"),
                (ExitCodes.Usage, "the command line is wrong; nothing was touched"),
                (ExitCodes.Warnings, "doctor only: warnings, no problem"),
                (ExitCodes.DeployUnhealthy, "deploy only, 4 to 9: the new generation did not take over, and why; see 'switchover deploy --help'"),
            ]),
            [deploy] = DeployCommand.ExitCodeHelp,
            [rollback] = RollbackCommand.ExitCodeHelp,
            [status] = StatusCommand.ExitCodeHelp,
            [cleanup] = CleanupCommand.ExitCodeHelp,
            [doctor] = Doctor.DoctorCommand.ExitCodeHelp,
            [migrate] = MigrateCommand.ExitCodeHelp,
            [agent] = AgentCommand.ExitCodeHelp,
        });
        return root;
    }

    /// <summary>Parses and runs the command line. Parse errors print one line to stderr and return <see cref="ExitCodes.Usage"/>.</summary>
    public static async Task<int> RunAsync(string[] args, InvocationConfiguration? configuration = null, CancellationToken cancellationToken = default)
    {
        configuration ??= new InvocationConfiguration();
        var parseResult = CreateRootCommand().Parse(args);

        // System.CommandLine exits 1 on parse errors and prints the whole help text; a usage error is exit code 2
        // here, so that scripts can tell it from an operational failure, and it stays one line.
        if (parseResult.Action is ParseErrorAction)
        {
            // The whole path of a nested command: 'switchover migrate finalize --help', not 'switchover finalize --help'.
            var path = new List<string>();
            for (var result = parseResult.CommandResult; result is { Command: not RootCommand }; result = result.Parent as System.CommandLine.Parsing.CommandResult)
            {
                path.Insert(0, result.Command.Name);
            }

            var help = string.Join(' ', ["switchover", .. path, "--help"]);
            var errors = string.Join(" ", parseResult.Errors.Select(e => e.Message));
            await configuration.Error.WriteLineAsync($"switchover: {errors} See '{help}'.").ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        return await parseResult.InvokeAsync(configuration, cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Options every command takes: where the external tools are (tests point them at missing binaries).</summary>
internal sealed class ToolOptions
{
    public Option<string?> Nft { get; } = new("--nft")
    {
        Description = "An nft program to use instead of libnftables in this process (doctor runs 'nft' from PATH unless this is set).",
        HelpName = "PATH",
        Recursive = true,
    };

    public Option<string?> Conntrack { get; } = new("--conntrack")
    {
        Description = "A conntrack program to count connections with instead of ctnetlink in this process (doctor runs 'conntrack' from PATH unless this is set).",
        HelpName = "PATH",
        Recursive = true,
    };
}
