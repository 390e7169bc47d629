using Switchover.Processes;

namespace Switchover.Netfilter;

/// <summary>Applies and removes a namespace's table through the <c>nft</c> binary.</summary>
internal sealed class NftClient(ICommandRunner runner, string nftPath = "nft")
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    public Task ApplyAsync(HandoffTable table, CancellationToken cancellationToken) =>
        RunScriptAsync(table.Render(), check: false, cancellationToken);

    /// <summary>Applies an nft script as one transaction (all or nothing).</summary>
    public Task ApplyScriptAsync(string script, CancellationToken cancellationToken) =>
        RunScriptAsync(script, check: false, cancellationToken);

    /// <summary>Checks an nft script without applying it.</summary>
    public Task CheckScriptAsync(string script, CancellationToken cancellationToken) =>
        RunScriptAsync(script, check: true, cancellationToken);

    public Task DeleteTableAsync(NamespaceName name, CancellationToken cancellationToken) =>
        RunScriptAsync(HandoffTable.RenderDelete(name), check: false, cancellationToken);

    /// <summary>Proves that nft is installed and that this process may change the ruleset, without changing it.</summary>
    public Task CheckAsync(NamespaceName name, CancellationToken cancellationToken) =>
        RunScriptAsync(HandoffTable.RenderProbe(name), check: true, cancellationToken);

    /// <summary>The table as nft lists it, or null when it does not exist.</summary>
    public Task<string?> ListTableAsync(NamespaceName name, CancellationToken cancellationToken) =>
        ListTableAsync("inet", name.TableName, cancellationToken);

    /// <summary>A table as nft lists it, or null when it does not exist.</summary>
    public async Task<string?> ListTableAsync(string family, string table, CancellationToken cancellationToken)
    {
        var result = await Run(runner.TryRunAsync, Command.Create(nftPath, "list", "table", family, table) with { Timeout = Timeout }, cancellationToken)
            .ConfigureAwait(false);
        if (result.ExitCode == 0)
        {
            return result.StandardOutput;
        }

        if (result.StandardError.Contains("No such file or directory", StringComparison.Ordinal))
        {
            return null;
        }

        throw Explain(new CommandException($"{nftPath} list table {family} {table}", result.ExitCode, result.StandardError.Trim(),
            $"nft list table failed: {result.StandardError.Trim()}"));
    }

    private async Task RunScriptAsync(string script, bool check, CancellationToken cancellationToken)
    {
        var command = (check ? Command.Create(nftPath, "--check", "-f", "-") : Command.Create(nftPath, "-f", "-"))
            with { StandardInput = script, Timeout = Timeout };
        await Run(runner.RunAsync, command, cancellationToken).ConfigureAwait(false);
    }

    private static async Task<CommandResult> Run(Func<Command, CancellationToken, Task<CommandResult>> run, Command command, CancellationToken cancellationToken)
    {
        try
        {
            return await run(command, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw Explain(e);
        }
    }

    private static NftException Explain(CommandException e)
    {
        string hint;
        if (e is CommandNotFoundException)
        {
            hint = "nft was not found. Install nftables (apt-get install nftables), or set Switchover:Mode=Disabled to bind the endpoints directly.";
        }
        else if (e.StandardError.Contains("Operation not permitted", StringComparison.Ordinal))
        {
            hint = "nft may not change the ruleset. Run as root or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit).";
        }
        else
        {
            hint = "nft rejected the ruleset; nothing was changed.";
        }

        return new NftException($"{hint} ({e.Message})", e);
    }
}

/// <summary>nft failed. The message says why and what to do; the inner exception carries the command and its stderr.</summary>
public sealed class NftException(string message, CommandException inner) : Exception(message, inner)
{
    public CommandException Command => (CommandException)InnerException!;
}
