using System.CommandLine;
using System.Globalization;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>
/// <c>switchover rollback</c>: gives the public ports back, in one transaction, to a superseded generation that is
/// still within its rollback window (it kept its listeners); the generation they are taken from drains and exits.
/// </summary>
internal static class RollbackCommand
{
    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(10);

    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "the previous generation holds the public ports (now, or already did)"),
        (ExitCodes.Failure, "the namespace lock is held, the state file is corrupt, or nft failed; nothing was changed"),
        (ExitCodes.Usage, "the command line is wrong; nothing was touched"),
        (ExitCodes.NothingToRollBackTo, "no superseded generation is alive within its rollback window (or the one named with --to is not); nothing was changed"),
    ]);

    public static Command Create(ToolOptions tools)
    {
        var ns = CommonOptions.Namespace("The namespace to roll back.", required: true);
        var stateDir = CommonOptions.StateDirectory();
        var to = new Option<long?>("--to")
        {
            Description = "The generation to give the ports back to (default: the newest superseded one still within its rollback window).",
            HelpName = "ID",
        };
        var command = new Command("rollback",
            "Give the public ports back to the previous generation while it is still within its rollback window " +
            "(Switchover:RollbackWindow, default 10 s after it was superseded): one nft transaction; the generation they are taken from drains and exits.")
        {
            ns,
            stateDir,
            to,
        };

        command.SetAction((parseResult, cancellationToken) => RunAsync(
            parseResult.GetValue(ns)!, parseResult.GetValue(stateDir)!, parseResult.GetValue(to), parseResult.GetValue(tools.Nft)!,
            parseResult.InvocationConfiguration.Output, parseResult.InvocationConfiguration.Error, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(NamespaceName name, string stateRoot, long? to, string nftPath,
        TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var handoff = Handoff.Create(stateRoot, name, LockTimeout, nftPath);
        NamespaceState? state;
        try
        {
            state = handoff.Store.ReadUnlocked();
        }
        catch (StateException e)
        {
            return await FailAsync(error, ExitCodes.Failure, e.Message).ConfigureAwait(false);
        }

        var now = DateTimeOffset.UtcNow;
        var target = to ?? state?.Generations.Where(g => g.CanRollBackTo(now) && g.Process.IsAlive()).MaxBy(g => g.Id)?.Id;
        if (target is null)
        {
            var why = state is null
                ? $"namespace '{name}' has no state under {stateRoot} in this network namespace"
                : $"no superseded generation of namespace '{name}' is alive within its rollback window " +
                  "(a generation keeps its listeners for Switchover:RollbackWindow after it is superseded, then exits)";
            return await FailAsync(error, ExitCodes.NothingToRollBackTo, why + "; nothing was changed. Deploy the previous version instead.").ConfigureAwait(false);
        }

        RollbackResult result;
        try
        {
            result = await handoff.RollbackAsync(target.Value, force: true, from: null, cancellationToken).ConfigureAwait(false);
        }
        catch (StateException e)
        {
            return await FailAsync(error, ExitCodes.Failure, e.Message).ConfigureAwait(false);
        }
        catch (NftException e)
        {
            return await FailAsync(error, ExitCodes.Failure, ToolErrors.Nft(e, nftPath, "apply the table") + " Nothing was changed.").ConfigureAwait(false);
        }

        switch (result.Outcome)
        {
            case RollbackOutcome.RolledBack:
                await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"rolled back namespace '{name}': generation {result.Active!.Id} (pid {result.Active.Pid}) holds the public ports again; {result.Reason}")).ConfigureAwait(false);
                foreach (var failure in result.SignalFailures)
                {
                    await error.WriteLineAsync($"switchover: warning: generation {failure.Generation.Id} was not told to drain: {failure.Error}").ConfigureAwait(false);
                }

                return ExitCodes.Success;
            case RollbackOutcome.AlreadyActive:
                await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"namespace '{name}': {result.Reason}; nothing was changed")).ConfigureAwait(false);
                return ExitCodes.Success;
            default:
                return await FailAsync(error, ExitCodes.NothingToRollBackTo, $"cannot roll back namespace '{name}': {result.Reason}; nothing was changed.").ConfigureAwait(false);
        }
    }

    private static async Task<int> FailAsync(TextWriter error, int code, string message)
    {
        await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(message)).ConfigureAwait(false);
        return code;
    }
}
