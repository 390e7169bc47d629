using Switchover.Processes;

namespace Switchover.Netfilter;

/// <summary>
/// Applies and removes a namespace's table. The handoff table (<see cref="ApplyAsync"/>, <see cref="DeleteTableAsync"/>,
/// <see cref="CheckAsync"/>) goes through our own nf_tables netlink batches by default (<see cref="NfTablesNetlink"/>):
/// no library, no text. Other text (scripts, listings) goes through libnftables in this process, or through an
/// <c>nft</c> program when one is named (<c>Switchover:NftPath</c>, <c>--nft</c>), which then takes the handoff table
/// too, as text; <c>NftPath=libnftables</c> sends the handoff table through libnftables. Each is one transaction.
/// </summary>
internal sealed class NftClient
{
    /// <summary>The <c>Switchover:NftPath</c> value that selects libnftables for the handoff table too.</summary>
    public const string LibNftablesName = "libnftables";

    private readonly INftBackend _backend;
    private readonly NfTablesNetlink? _netlink;

    /// <param name="netlink">The handoff table's transport; null: the table's text through <paramref name="backend"/>.</param>
    public NftClient(INftBackend backend, NfTablesNetlink? netlink = null)
    {
        _backend = backend;
        _netlink = netlink;
    }

    /// <summary>The <c>nft</c> program at <paramref name="nftPath"/>, run through <paramref name="runner"/>.</summary>
    public NftClient(ICommandRunner runner, string nftPath = "nft")
        : this(new NftProgramBackend(runner, nftPath))
    {
    }

    /// <summary>
    /// Null or empty: the handoff table through netlink, other text through libnftables (loaded only when used).
    /// "libnftables": everything through libnftables. Otherwise that program for everything.
    /// </summary>
    public static NftClient Create(string? nftPath) =>
        string.IsNullOrEmpty(nftPath) ? new NftClient(LibNftablesBackend.Instance, NfTablesNetlink.Instance)
        : nftPath == LibNftablesName ? new NftClient(LibNftablesBackend.Instance)
        : new NftClient(CommandRunner.Instance, nftPath);

    /// <summary>How the handoff table is applied: "nf_tables netlink", "libnftables" or the program's path.</summary>
    public string TableTransport => _netlink is null ? _backend.Name : NfTablesNetlink.Name;

    /// <summary>"libnftables" or the program's path.</summary>
    public string Transport => _backend.Name;

    public Task ApplyAsync(HandoffTable table, CancellationToken cancellationToken)
    {
        if (_netlink is null)
        {
            return RunScriptAsync(table.Render(), check: false, cancellationToken);
        }

        _netlink.Apply(table, cancellationToken);
        return Task.CompletedTask;
    }

    /// <summary>Applies an nft script as one transaction (all or nothing).</summary>
    public Task ApplyScriptAsync(string script, CancellationToken cancellationToken) =>
        RunScriptAsync(script, check: false, cancellationToken);

    /// <summary>Checks an nft script without applying it.</summary>
    public Task CheckScriptAsync(string script, CancellationToken cancellationToken) =>
        RunScriptAsync(script, check: true, cancellationToken);

    public Task DeleteTableAsync(NamespaceName name, CancellationToken cancellationToken)
    {
        if (_netlink is null)
        {
            return RunScriptAsync(HandoffTable.RenderDelete(name), check: false, cancellationToken);
        }

        _netlink.DeleteTable(name, cancellationToken);
        return Task.CompletedTask;
    }

    /// <summary>Proves that nftables works here and that this process may change the ruleset, without changing it.</summary>
    public Task CheckAsync(NamespaceName name, CancellationToken cancellationToken)
    {
        if (_netlink is null)
        {
            return RunScriptAsync(HandoffTable.RenderProbe(name), check: true, cancellationToken);
        }

        _netlink.Check(cancellationToken);
        return Task.CompletedTask;
    }

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
        else if (e.StandardError.StartsWith("nf_tables is not available", StringComparison.Ordinal))
        {
            hint = "nf_tables is not available in this kernel. Load it (modprobe nf_tables), or set Switchover:Mode=Disabled to bind the endpoints directly.";
        }
        else if (e.StandardError.Contains("Operation not permitted", StringComparison.Ordinal))
        {
            hint = "nft may not change the ruleset. Run as root or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit).";
        }
        else if (e.ExitCode is null)
        {
            hint = "nftables could not be used; nothing was changed.";
        }
        else if (e.CommandLine == NfTablesNetlink.Name)
        {
            hint = "The kernel refused the table; nothing was changed.";
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
