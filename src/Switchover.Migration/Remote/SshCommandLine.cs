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
        var arguments = Options(peer);
        arguments.AddRange(["--", peer.Address.Host, RemoteCommand(peer.Command, remoteArguments)]);
        return arguments;
    }

    /// <summary>
    /// <c>ssh -G</c> with the same options: the configuration ssh would use for the peer (its ssh_config aliases
    /// applied), printed without connecting.
    /// </summary>
    public static IReadOnlyList<string> Configuration(PeerConnection peer)
    {
        var arguments = Options(peer);
        arguments.AddRange(["-G", "--", peer.Address.Host]);
        return arguments;
    }

    /// <summary>
    /// The address and port ssh connects to, from <c>ssh -G</c>'s output ("hostname", "port" and "addressfamily"
    /// lines): the host as ssh would resolve it, or null when it names none.
    /// </summary>
    public static (string Host, int Port, System.Net.Sockets.AddressFamily Family)? ParseConfiguration(string output)
    {
        string? host = null;
        int? port = null;
        var family = System.Net.Sockets.AddressFamily.Unspecified;
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space <= 0)
            {
                continue;
            }

            var value = line[(space + 1)..].Trim();
            switch (line[..space])
            {
                case "hostname":
                    host = value;
                    break;
                case "port" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p is > 0 and < 65536:
                    port = p;
                    break;
                case "addressfamily":
                    family = value switch
                    {
                        "inet" => System.Net.Sockets.AddressFamily.InterNetwork,
                        "inet6" => System.Net.Sockets.AddressFamily.InterNetworkV6,
                        _ => System.Net.Sockets.AddressFamily.Unspecified,
                    };
                    break;
            }
        }

        return host is { Length: > 0 } && port is { } found ? (host, found, family) : null;
    }

    private static List<string> Options(PeerConnection peer)
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
