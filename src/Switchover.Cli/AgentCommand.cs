using System.CommandLine;
using System.Runtime.InteropServices;
using Switchover.Agent;

namespace Switchover.Cli;

/// <summary>
/// <c>switchover agent</c>: the privileged daemon that carries out handoffs for apps that run without privileges.
/// Not to be confused with the tunnel agent of the migration work, which is <c>switchover tunnel run</c>.
/// </summary>
internal static class AgentCommand
{
    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "stopped by SIGTERM or SIGINT; the generations keep running, and the next agent watches them again"),
        (ExitCodes.Failure, "did not start: the policy file is missing or invalid, or the socket cannot be bound (another agent " +
            "listens there); nothing was changed"),
        (ExitCodes.Usage, "the command line is wrong; nothing was touched"),
    ]);

    public static Command Create(ToolOptions tools)
    {
        var socket = new Option<string>("--socket")
        {
            Description = $"The Unix socket to listen on when systemd passed none (socket activation, LISTEN_FDS). Default: {HandoffAgent.DefaultSocketPath}, " +
                "which apps use when Switchover:Agent is auto.",
            HelpName = "PATH",
            DefaultValueFactory = _ => HandoffAgent.DefaultSocketPath,
        };
        var policy = new Option<string>("--policy")
        {
            Description = $"The policy file: which users and groups may own which namespace and which public ports. Default: {AgentPolicy.DefaultPath}.",
            HelpName = "PATH",
            DefaultValueFactory = _ => AgentPolicy.DefaultPath,
        };
        var stateDir = CommonOptions.StateDirectory();
        var command = new Command("agent",
            "Run the Switchover agent in the foreground (for systemd; socket activation supported): apps without privileges " +
            "(Switchover:Agent) ask it to apply their namespace's nft table, mark their private listeners IP_TRANSPARENT, " +
            "count their conntrack flows and signal the generation they supersede. The kernel says who asks (SO_PEERCRED), " +
            "the policy says what they may do; everything else is refused and logged. It holds a pidfd for every generation " +
            "and repairs a namespace the moment its active generation dies. Logs go to standard error.")
        {
            socket,
            policy,
            stateDir,
        };
        command.SetAction((parseResult, cancellationToken) => RunAsync(new HandoffAgentSettings
        {
            SocketPath = parseResult.GetValue(socket)!,
            StateRoot = parseResult.GetValue(stateDir)!,
            NftPath = parseResult.GetValue(tools.Nft),
            ConntrackPath = parseResult.GetValue(tools.Conntrack),
        }, parseResult.GetValue(policy)!, parseResult.InvocationConfiguration.Error, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(HandoffAgentSettings settings, string policyPath, TextWriter error, CancellationToken cancellationToken)
    {
        // As for the tunnel agent: SIGTERM is cancelled so that the runtime does not exit before the agent has stopped.
        using var signalled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);

        AgentPolicy policy;
        try
        {
            policy = AgentPolicy.Load(policyPath);
        }
        catch (AgentPolicyException e)
        {
            await error.WriteLineAsync("switchover agent: " + e.Message).ConfigureAwait(false);
            return ExitCodes.Failure;
        }

        HandoffAgent agent;
        try
        {
            agent = await HandoffAgent.StartAsync(settings, policy, error, signalled.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            await error.WriteLineAsync("switchover agent: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
            return ExitCodes.Failure;
        }

        SystemdNotify.TrySend($"READY=1\nSTATUS=listening on {agent.Listening}, watching {agent.Watched} generation(s)");
        try
        {
            await Task.Delay(Timeout.Infinite, signalled.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            SystemdNotify.TrySend("STOPPING=1");
        }
        finally
        {
            await agent.DisposeAsync().ConfigureAwait(false);
        }

        return ExitCodes.Success;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            signalled.Cancel();
        }
    }
}
