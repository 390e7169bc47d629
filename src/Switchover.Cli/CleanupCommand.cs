using System.CommandLine;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Cli;

/// <summary><c>switchover cleanup</c>: removes a namespace's nft table and state directory.</summary>
internal static class CleanupCommand
{
    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(10);

    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "removed, or there was nothing to remove"),
        (ExitCodes.Failure, "live generations and no --force, a corrupt state file, the namespace lock is held, or nft " +
            "failed; nothing was removed"),
        (ExitCodes.Usage, "the command line is wrong (e.g. an invalid --namespace); nothing was touched"),
    ]);

    public static Command Create(ToolOptions tools)
    {
        var ns = CommonOptions.Namespace("The namespace to clean up.", required: true);
        var stateDir = CommonOptions.StateDirectory();
        var force = new Option<bool>("--force")
        {
            Description = "Remove the table and the state even while generations are running, or when the state file is " +
                "corrupt. The generations keep running but get no new connections, and connections open through the public " +
                "ports are reset: without the table the kernel no longer translates them.",
        };
        var command = new Command("cleanup",
            "Remove a namespace's nft table and state directory. Refuses while live generations are recorded, unless --force; " +
            "on a clean namespace it succeeds and changes nothing.")
        {
            ns,
            stateDir,
            force,
        };

        command.SetAction((parseResult, cancellationToken) => RunAsync(
            parseResult.GetValue(ns)!, parseResult.GetValue(stateDir)!, parseResult.GetValue(force), parseResult.GetValue(tools.Nft),
            parseResult.InvocationConfiguration.Output, parseResult.InvocationConfiguration.Error, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(NamespaceName name, string stateRoot, bool force, string? nftPath,
        TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var handoff = Handoff.Create(stateRoot, name, LockTimeout, nftPath);
        var table = $"inet {name.TableName}";
        bool tableExisted;
        try
        {
            // Asking first also proves nft works before anything is removed.
            tableExisted = await NftClient.Create(nftPath).ListTableAsync(name, cancellationToken).ConfigureAwait(false) is not null;
        }
        catch (NftException e)
        {
            return await FailAsync(error, ToolErrors.Nft(e, nftPath, "read the ruleset") + " Nothing was removed.").ConfigureAwait(false);
        }

        var stateExisted = handoff.Store.Exists;
        if (!tableExisted && !stateExisted)
        {
            // Taking the lock would create the directory only to delete it again.
            await output.WriteLineAsync($"nothing to clean up: namespace '{name}' has no nft table {table} and no state under {stateRoot}")
                .ConfigureAwait(false);
            return ExitCodes.Success;
        }

        IReadOnlyList<GenerationRecord> live;
        try
        {
            live = await handoff.CleanupAsync(force, cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException e)
        {
            // Live generations and no --force: Handoff's message says to stop them or to pass --force.
            return await FailAsync(error, e.Message + " Nothing was removed.").ConfigureAwait(false);
        }
        catch (StateException e)
        {
            return await FailAsync(error, e.Message).ConfigureAwait(false);
        }
        catch (NftException e)
        {
            return await FailAsync(error, ToolErrors.Nft(e, nftPath, "delete the table") + " Nothing was removed.").ConfigureAwait(false);
        }

        if (tableExisted)
        {
            await output.WriteLineAsync($"removed nft table {table}").ConfigureAwait(false);
        }

        if (stateExisted)
        {
            await output.WriteLineAsync($"removed state directory {handoff.Store.Directory}").ConfigureAwait(false);
        }

        if (handoff.Store.Exists)
        {
            await error.WriteLineAsync($"switchover: warning: {handoff.Store.Directory} still exists: it holds files switchover " +
                "did not create, or a generation of this namespace has just started. Inspect it.").ConfigureAwait(false);
        }

        if (live.Count > 0)
        {
            var pids = string.Join(", ", live.Select(g => $"generation {g.Id} pid {g.Pid}"));
            // Checked by hand: once the table (the only NAT chain) is gone, the kernel stops translating the flows it
            // redirected, so their next packet gets a reset even though conntrack still lists them.
            await error.WriteLineAsync($"switchover: warning: left running ({pids}): they get no new connections, connections " +
                "open through the public ports were reset, and switchover no longer tracks them. Stop them with SIGTERM.")
                .ConfigureAwait(false);
        }

        return ExitCodes.Success;
    }

    private static async Task<int> FailAsync(TextWriter error, string message)
    {
        await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(message)).ConfigureAwait(false);
        return ExitCodes.Failure;
    }
}
