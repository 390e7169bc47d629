using System.Globalization;
using System.Text;

namespace Switchover.Migration.Remote;

/// <summary>
/// The OpenSSH client's argument array for one call to the peer (pure: no I/O). ssh joins everything after the host
/// into one string for the remote user's shell, so the remote command is built here as that one string, every
/// argument Switchover adds quoted for a POSIX shell.
/// </summary>
internal static class SshCommandLine
{
    public const string Program = "ssh";

    public static IReadOnlyList<string> Build(PeerConnection peer, IReadOnlyList<string> remoteArguments)
    {
        var address = peer.Address;
        var arguments = new List<string>
        {
            // No prompt for a password or a passphrase, and no host key accepted that is not already known: an
            // unknown or changed host key and a refused key make ssh exit 255 before anything runs on the peer.
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + ConfigValue(peer.KnownHostsFile),
            "-o", "IdentitiesOnly=yes",
            "-o", string.Create(CultureInfo.InvariantCulture, $"ConnectTimeout={peer.ConnectTimeoutSeconds}"),
            // A peer that vanishes mid-call is noticed within 15 s, not at the overall timeout only.
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-i", peer.IdentityFile,
            "-p", address.Port.ToString(CultureInfo.InvariantCulture),
            "-T",
        };
        if (address.User is { } user)
        {
            arguments.AddRange(["-l", user]);
        }

        arguments.AddRange(["--", address.Host, RemoteCommand(peer.Command, remoteArguments)]);
        return arguments;
    }

    /// <summary>The remote program (the operator's shell text, as given) followed by the arguments, each quoted.</summary>
    public static string RemoteCommand(string program, IReadOnlyList<string> arguments)
    {
        var text = new StringBuilder(program.Trim());
        foreach (var argument in arguments)
        {
            text.Append(' ').Append(Quote(argument));
        }

        return text.ToString();
    }

    /// <summary>One word for a POSIX shell: as is when it is made of safe characters only; otherwise in single quotes.</summary>
    public static string Quote(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c, StringComparison.Ordinal))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>ssh reads -o values as configuration lines: a path with spaces goes in double quotes (none may be in it; validated).</summary>
    private static string ConfigValue(string path) => path.Any(char.IsWhiteSpace) ? "\"" + path + "\"" : path;
}
