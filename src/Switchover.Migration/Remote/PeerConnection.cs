using System.Globalization;
using System.Text.Json.Serialization;

namespace Switchover.Migration.Remote;

/// <summary>
/// How this host reaches the other side of a migration: the OpenSSH client with a named key and a named known_hosts
/// file, and the <c>switchover</c> program there. Journaled on this host, so later commands need not repeat it.
/// </summary>
/// <param name="Uri">ssh://[user@]host[:port]</param>
/// <param name="IdentityFile">The private key (ssh -i), an absolute path.</param>
/// <param name="KnownHostsFile">The file that must hold the peer's host key (UserKnownHostsFile), an absolute path.</param>
/// <param name="Command">The remote program as shell text for the peer's shell, e.g. <c>switchover</c> or <c>dotnet /opt/switchover/switchover.dll</c>.</param>
/// <param name="StateDirectory">The remote's --state-dir; null for its default.</param>
/// <param name="Timeout">The bound on one remote call (connect, run, answer).</param>
public sealed record PeerConnection(string Uri, string IdentityFile, string KnownHostsFile, string Command, string? StateDirectory, TimeSpan Timeout)
{
    public const string DefaultCommand = "switchover";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(2);

    /// <summary>What the peer answered to each call so far, oldest first (at most <see cref="MaxAnswers"/>).</summary>
    public IReadOnlyList<PeerExchange> Answers { get; init; } = [];

    public const int MaxAnswers = 50;

    [JsonIgnore]
    public PeerAddress Address => PeerAddress.Parse(Uri);

    /// <summary>ConnectTimeout: the TCP connect and the SSH handshake, well inside the overall bound.</summary>
    [JsonIgnore]
    public int ConnectTimeoutSeconds => (int)Math.Clamp(Timeout.TotalSeconds / 2, 1, 10);

    public PeerConnection WithAnswer(PeerExchange answer) => this with { Answers = [.. Answers.TakeLast(MaxAnswers - 1), answer] };

    /// <summary>Every problem with the connection's settings that can be seen here; empty when valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (PeerAddress.TryParse(Uri, out _) is { } error)
        {
            errors.Add(error);
        }

        foreach (var (option, path) in new[] { ("--ssh-key", IdentityFile), ("--ssh-known-hosts", KnownHostsFile) })
        {
            if (path.Any(c => c is '"' or '\n' or '\r' || char.IsControl(c)))
            {
                errors.Add($"{option} '{path}' holds a quote or a control character; ssh cannot take it in -o. Move the file to a plain path.");
            }
            else if (!File.Exists(path))
            {
                errors.Add($"{option} '{path}' does not exist. Give the path of an existing file.");
            }
        }

        if (string.IsNullOrWhiteSpace(Command) || Command.Any(c => c is '\n' or '\r' or '\0'))
        {
            errors.Add($"--peer-command '{Command}' must be one line of shell text that starts switchover on the peer, e.g. 'switchover' or 'dotnet /opt/switchover/switchover.dll'.");
        }

        if (Timeout <= TimeSpan.Zero)
        {
            errors.Add("--peer-timeout must be positive.");
        }

        return errors;
    }
}

/// <summary>One call to the peer as the local journal keeps it: when, what was asked, and what the peer answered.</summary>
public sealed record PeerExchange(DateTimeOffset At, string Request, bool Ok, IReadOnlyList<string> Answer);

/// <summary>The peer's SSH address, from <c>ssh://[user@]host[:port]</c>.</summary>
public sealed record PeerAddress(string? User, string Host, int Port)
{
    public const int DefaultPort = 22;

    public static PeerAddress Parse(string text) =>
        TryParse(text, out var address) is { } error ? throw new FormatException(error) : address!;

    /// <summary>Null when <paramref name="text"/> is a valid address; otherwise what is wrong with it.</summary>
    public static string? TryParse(string text, out PeerAddress? address)
    {
        address = null;
        const string Form = "write ssh://[user@]host[:port], e.g. ssh://root@192.0.2.1 or ssh://admin@[2001:db8::1]:2222";
        if (!text.StartsWith("ssh://", StringComparison.Ordinal))
        {
            return $"--peer '{text}' is not an ssh:// address: {Form}.";
        }

        var rest = text["ssh://".Length..].TrimEnd('/');
        string? user = null;
        var at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            user = rest[..at];
            rest = rest[(at + 1)..];
            if (user.Length == 0 || !user.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.'))
            {
                return $"--peer '{text}': the user '{user}' must be made of letters, digits, '_', '-' and '.'.";
            }
        }

        var port = DefaultPort;
        string host;
        if (rest.StartsWith('['))
        {
            var close = rest.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                return $"--peer '{text}': an IPv6 address needs its closing ']': {Form}.";
            }

            host = rest[1..close];
            rest = rest[(close + 1)..];
            if (!System.Net.IPAddress.TryParse(host, out _))
            {
                return $"--peer '{text}': '{host}' in brackets is not an IPv6 address.";
            }
        }
        else
        {
            var colon = rest.LastIndexOf(':');
            host = colon >= 0 ? rest[..colon] : rest;
            rest = colon >= 0 ? rest[colon..] : string.Empty;
        }

        if (rest.Length > 0)
        {
            if (!rest.StartsWith(':') || !int.TryParse(rest[1..], NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535)
            {
                return $"--peer '{text}': the port must be a number 1-65535: {Form}.";
            }
        }

        // A host that starts with '-' would be read by ssh as an option; only names and addresses are accepted.
        if (host.Length == 0 || host.StartsWith('-') || !host.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or ':' or '_'))
        {
            return $"--peer '{text}': '{host}' is not a host name or address: {Form}.";
        }

        address = new PeerAddress(user, host, port);
        return null;
    }

    public override string ToString() =>
        "ssh://" + (User is null ? string.Empty : User + "@") + (Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]" : Host) +
        (Port == DefaultPort ? string.Empty : string.Create(CultureInfo.InvariantCulture, $":{Port}"));
}
