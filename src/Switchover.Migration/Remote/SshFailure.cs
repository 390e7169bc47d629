namespace Switchover.Migration.Remote;

/// <summary>Why a call to the peer did not reach the remote program, as the OpenSSH client reports it.</summary>
public enum SshFailureKind
{
    /// <summary>ssh itself succeeded; the failure (if any) is the remote program's.</summary>
    None,
    HostKeyUnknown,
    HostKeyChanged,
    PermissionDenied,
    KeyUnreadable,
    Unreachable,
    /// <summary>The call was cut at its bound: the peer may or may not have acted.</summary>
    TimedOut,
    RemoteProgramMissing,
    Other,
}

/// <summary>Classifies a finished ssh call from its exit code and standard error, and says what to do.</summary>
internal static class SshFailure
{
    /// <summary>ssh exits with 255 when it fails itself; any other code is the remote command's.</summary>
    public const int SshExitCode = 255;

    /// <summary>A POSIX shell's "command not found".</summary>
    public const int NotFoundExitCode = 127;

    public static SshFailureKind Classify(int exitCode, string standardError)
    {
        if (exitCode == NotFoundExitCode)
        {
            return SshFailureKind.RemoteProgramMissing;
        }

        if (exitCode != SshExitCode)
        {
            return SshFailureKind.None;
        }

        bool Has(string text) => standardError.Contains(text, StringComparison.OrdinalIgnoreCase);
        if (Has("REMOTE HOST IDENTIFICATION HAS CHANGED") || Has("host key for") && Has("has changed"))
        {
            return SshFailureKind.HostKeyChanged;
        }

        if (Has("Host key verification failed") || Has("host key is known for"))
        {
            return SshFailureKind.HostKeyUnknown;
        }

        if (Has("Load key") || Has("not accessible") || Has("bad permissions") || Has("invalid format"))
        {
            return SshFailureKind.KeyUnreadable;
        }

        if (Has("Permission denied"))
        {
            return SshFailureKind.PermissionDenied;
        }

        if (Has("Connection refused") || Has("timed out") || Has("No route to host") || Has("Network is unreachable")
            || Has("Could not resolve hostname") || Has("Connection closed") || Has("Connection reset")
            || Has("closed by remote host") || Has("Timeout, server"))
        {
            return SshFailureKind.Unreachable;
        }

        return SshFailureKind.Other;
    }

    /// <summary>
    /// Whether the peer's program may have run, at least in part: not when ssh refused before it ran (keys, host keys,
    /// no such program). A connection that broke or timed out mid-call may have left the peer's command running.
    /// </summary>
    public static bool MayHaveRun(SshFailureKind kind) =>
        kind is not (SshFailureKind.HostKeyUnknown or SshFailureKind.HostKeyChanged or SshFailureKind.PermissionDenied or SshFailureKind.KeyUnreadable
            or SshFailureKind.RemoteProgramMissing);

    /// <summary>What happened and what to do, for an operator.</summary>
    public static string Explain(SshFailureKind kind, PeerConnection peer, string standardError)
    {
        var address = peer.Address;
        var said = LastLines(standardError);
        var port = address.Port == PeerAddress.DefaultPort ? string.Empty : $" -p {address.Port}";
        return kind switch
        {
            SshFailureKind.HostKeyUnknown =>
                $"ssh refused {address}: its host key is not in {peer.KnownHostsFile} (ssh: {said}). Nothing ran on the peer. " +
                $"Check the peer's host key fingerprint out of band (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the peer), then add it: " +
                $"ssh-keyscan{port} {address.Host} >> {peer.KnownHostsFile}; or name the right file with --ssh-known-hosts.",
            SshFailureKind.HostKeyChanged =>
                $"ssh refused {address}: its host key differs from the one in {peer.KnownHostsFile} (ssh: {said}). Nothing ran on the peer. " +
                "This is either a reinstalled peer or someone in between: check the fingerprint out of band before you replace the entry " +
                $"(ssh-keygen -R {address.Host} -f {peer.KnownHostsFile}).",
            SshFailureKind.PermissionDenied =>
                $"{address} refused the key {peer.IdentityFile} (ssh: {said}). Nothing ran on the peer. " +
                $"Add {peer.IdentityFile}.pub to {(address.User ?? "the user")}'s ~/.ssh/authorized_keys on the peer, or name the right key with --ssh-key " +
                "(the key must have no passphrase or be in a running ssh-agent: ssh runs in batch mode).",
            SshFailureKind.KeyUnreadable =>
                $"ssh could not use the key {peer.IdentityFile} (ssh: {said}). Nothing ran on the peer. Name a readable private key with --ssh-key (mode 600).",
            SshFailureKind.Unreachable =>
                $"ssh could not reach {address} (ssh: {said}). Nothing ran on the peer. Check that sshd runs there and the address and port are right.",
            SshFailureKind.RemoteProgramMissing =>
                $"{address} has no '{peer.Command}' (the remote shell said: {said}). Install switchover there, or give the program with --peer-command.",
            _ => $"ssh to {address} failed (ssh: {said}). Nothing ran on the peer.",
        };
    }

    private static string LastLines(string standardError)
    {
        var lines = standardError.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => !l.StartsWith("@@@", StringComparison.Ordinal) && !l.StartsWith("Warning: Permanently added", StringComparison.Ordinal))
            .TakeLast(3).ToList();
        return lines.Count == 0 ? "no error output" : string.Join(" / ", lines);
    }
}
