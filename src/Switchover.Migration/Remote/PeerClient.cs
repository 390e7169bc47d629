using System.Net;
using Switchover.Processes;

namespace Switchover.Migration.Remote;

/// <summary>
/// Runs <c>switchover</c> on the peer through the OpenSSH client: one ssh process per call, bounded by the
/// connection's timeout, its answer read from <c>--json</c>. The transport is ssh's own (keys, host keys, crypto).
/// </summary>
internal sealed class PeerClient(ICommandRunner runner, PeerConnection peer)
{
    public PeerConnection Connection => peer;

    /// <summary>
    /// Proves the connection and the remote program before anything changes: ssh authenticates both ends
    /// (BatchMode, strict host key) and runs <c>switchover --version</c>. Throws a <see cref="PeerException"/> that
    /// says which of them failed.
    /// </summary>
    public async Task<string> CheckAsync(CancellationToken cancellationToken)
    {
        var result = await RunAsync(["--version"], peer.Timeout, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new PeerException(SshFailureKind.Other,
                $"'{peer.Command} --version' on {peer.Address} exited with {result.ExitCode}: {Trim(result.StandardError)}. " +
                "Check --peer-command (it must start switchover there).");
        }

        return result.StandardOutput.Trim();
    }

    /// <summary>
    /// The addresses ssh connects to for the peer: its configuration (<c>ssh -G</c>, so an ssh_config alias counts)
    /// resolved the way ssh resolves it (getaddrinfo, in the address family ssh is told to use). One address for a
    /// literal; each address of a name, since ssh takes the first that answers.
    /// </summary>
    public async Task<IReadOnlyList<IPEndPoint>> ResolveAsync(CancellationToken cancellationToken)
    {
        var command = new Command(SshCommandLine.Program, SshCommandLine.Configuration(peer)) { Timeout = peer.Timeout };
        CommandResult result;
        try
        {
            result = await runner.TryRunAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandNotFoundException e)
        {
            throw new PeerException(SshFailureKind.Other, $"The OpenSSH client could not be started ({e.Message}). Install openssh-client.");
        }

        if (result.ExitCode != 0 || SshCommandLine.ParseConfiguration(result.StandardOutput) is not { } target)
        {
            throw new PeerException(SshFailureKind.Other,
                $"'ssh -G {peer.Address.Host}' did not say which host ssh connects to (exit {result.ExitCode}): {Trim(result.StandardError)}.");
        }

        if (IPAddress.TryParse(target.Host, out var literal))
        {
            return [new IPEndPoint(literal, target.Port)];
        }

        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(target.Host, target.Family, cancellationToken).ConfigureAwait(false);
        }
        catch (System.Net.Sockets.SocketException e)
        {
            throw new PeerException(SshFailureKind.Other,
                $"{target.Host} (the host ssh connects to for {peer.Address}) could not be resolved here: {e.Message}. Give the peer by its address.");
        }

        return [.. addresses.Distinct().Select(a => new IPEndPoint(a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a, target.Port))];
    }

    /// <summary>
    /// Runs <c>migrate VERB ARGS --json [--state-dir DIR]</c> on the peer and returns its answer, successful or not.
    /// Throws a <see cref="PeerException"/> when ssh failed or the peer gave no answer.
    /// </summary>
    /// <param name="longer">Extra time over the connection's timeout, for a call that waits (move --wait).</param>
    public async Task<MigrationAnswer> MigrateAsync(string verb, IReadOnlyList<string> arguments, TimeSpan longer, CancellationToken cancellationToken)
    {
        var result = await RunAsync(MigrateArguments(verb, arguments, json: true), peer.Timeout + longer, cancellationToken).ConfigureAwait(false);
        return MigrationAnswer.TryParse(result.StandardOutput)
            ?? throw new PeerException(SshFailureKind.Other,
                $"'switchover migrate {verb}' on {peer.Address} exited with {result.ExitCode} and gave no JSON answer: {Trim(result.StandardError + result.StandardOutput)}. " +
                "The peer's switchover may be too old for --json: install the same version on both hosts.");
    }

    /// <summary>Runs <c>migrate VERB ARGS</c> on the peer and returns what it printed (status, for a person or as JSON).</summary>
    public async Task<(int ExitCode, string Output, string Error)> MigrateTextAsync(string verb, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var result = await RunAsync(MigrateArguments(verb, arguments, json: false), peer.Timeout, cancellationToken).ConfigureAwait(false);
        return (result.ExitCode, result.StandardOutput, result.StandardError);
    }

    private List<string> MigrateArguments(string verb, IReadOnlyList<string> arguments, bool json)
    {
        List<string> all = ["migrate", verb, .. arguments];
        if (json)
        {
            all.Add("--json");
        }

        if (peer.StateDirectory is { } stateDirectory)
        {
            all.AddRange(["--state-dir", stateDirectory]);
        }

        return all;
    }

    /// <summary>One ssh call; throws a <see cref="PeerException"/> when ssh itself failed or the bound passed.</summary>
    private async Task<CommandResult> RunAsync(IReadOnlyList<string> remoteArguments, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var command = new Command(SshCommandLine.Program, SshCommandLine.Build(peer, remoteArguments)) { Timeout = timeout };
        CommandResult result;
        try
        {
            result = await runner.TryRunAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandNotFoundException e)
        {
            throw new PeerException(SshFailureKind.Other, $"The OpenSSH client could not be started ({e.Message}). Install openssh-client.");
        }
        catch (CommandException e) when (e.ExitCode is null)
        {
            // Killed at the bound: the peer may or may not have acted, so the caller's undo runs.
            throw new PeerException(SshFailureKind.TimedOut,
                $"{peer.Address} did not answer within {timeout.TotalSeconds:0} s ({e.Message}). --peer-timeout sets the bound.");
        }

        // ssh's own failures (host key, authentication, connection), before the remote program's exit code means anything.
        return SshFailure.Classify(result.ExitCode, result.StandardError) is var kind && kind != SshFailureKind.None
            ? throw new PeerException(kind, SshFailure.Explain(kind, peer, result.StandardError))
            : result;
    }

    private static string Trim(string text)
    {
        text = text.Trim();
        return text.Length == 0 ? "(no output)" : text.Length > 2000 ? text[..2000] + "…" : text;
    }
}

/// <summary>A call to the peer failed before its program could answer: ssh's own failure, classified, with what to do.</summary>
public sealed class PeerException(SshFailureKind kind, string message) : Exception(message)
{
    public SshFailureKind Kind { get; } = kind;
}
