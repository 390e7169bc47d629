using Switchover.Processes;

namespace Switchover.Netfilter;

/// <summary>
/// Applies and removes a namespace's table: through libnftables in this process by default, or through an
/// <c>nft</c> program when one is named (<c>Switchover:NftPath</c>, <c>--nft</c>). Both take the same text, as one
/// transaction.
/// </summary>
internal sealed class NftClient
{
    private readonly INftBackend _backend;

    public NftClient(INftBackend backend) => _backend = backend;

    /// <summary>The <c>nft</c> program at <paramref name="nftPath"/>, run through <paramref name="runner"/>.</summary>
    public NftClient(ICommandRunner runner, string nftPath = "nft")
        : this(new NftProgramBackend(runner, nftPath))
    {
    }

    /// <summary>libnftables in-process when <paramref name="nftPath"/> is null or empty; otherwise that program.</summary>
    public static NftClient Create(string? nftPath) =>
        string.IsNullOrEmpty(nftPath) ? new NftClient(LibNftablesBackend.Instance) : new NftClient(CommandRunner.Instance, nftPath);

    /// <summary>"libnftables" or the program's path.</summary>
    public string Transport => _backend.Name;

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

    /// <summary>Proves that nftables works here and that this process may change the ruleset, without changing it.</summary>
    public Task CheckAsync(NamespaceName name, CancellationToken cancellationToken) =>
        RunScriptAsync(HandoffTable.RenderProbe(name), check: true, cancellationToken);

    /// <summary>The table as nft lists it, or null when it does not exist.</summary>
    public Task<string?> ListTableAsync(NamespaceName name, CancellationToken cancellationToken) =>
        ListTableAsync("inet", name.TableName, cancellationToken);

    /// <summary>A table as nft lists it, or null when it does not exist.</summary>
    public async Task<string?> ListTableAsync(string family, string table, CancellationToken cancellationToken)
    {
        var commands = $"list table {family} {table}\n";
        var result = await Run(commands, dryRun: false, cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            return result.Output;
        }

        if (result.Error.Contains("No such file or directory", StringComparison.Ordinal))
        {
            return null;
        }

        throw Explain(Failure(commands, dryRun: false, result));
    }

    private async Task RunScriptAsync(string script, bool check, CancellationToken cancellationToken)
    {
        var result = await Run(script, check, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw Explain(Failure(script, check, result));
        }
    }

    private async Task<NftResult> Run(string commands, bool dryRun, CancellationToken cancellationToken)
    {
        try
        {
            return await _backend.RunAsync(commands, dryRun, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw Explain(e);
        }
    }

    private CommandException Failure(string commands, bool dryRun, NftResult result)
    {
        var error = result.Error.Trim();
        var first = commands.AsSpan().Trim().ToString().Split('\n')[0];
        return new CommandException(_backend.Describe(dryRun), result.Status, error,
            $"'{_backend.Describe(dryRun)}' ({first} ...) failed with status {result.Status}: {(error.Length > 0 ? error : "(no error output)")}");
    }

    internal static NftException Explain(CommandException e)
    {
        string hint;
        if (e is CommandNotFoundException)
        {
            hint = "nft was not found. Install nftables (apt-get install nftables), or set Switchover:Mode=Disabled to bind the endpoints directly.";
        }
        else if (e.InnerException is DllNotFoundException)
        {
            hint = "libnftables was not found. Install it (apt-get install libnftables1), name an nft program with Switchover:NftPath, or set Switchover:Mode=Disabled to bind the endpoints directly.";
        }
        else if (e.StandardError.Contains("Operation not permitted", StringComparison.Ordinal))
        {
            hint = "nft may not change the ruleset. Run as root or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit).";
        }
        else if (e.ExitCode is null)
        {
            hint = "nftables could not be used; nothing was changed.";
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
