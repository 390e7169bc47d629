using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Netfilter;

namespace Switchover.Migration.Plan;

/// <summary>What <c>migrate move</c> asks of the new host before it steers a single new flow there.</summary>
public enum MoveCheckKind
{
    /// <summary>A TCP connection to the tuple, through the tunnel, is accepted.</summary>
    Tcp,

    /// <summary>An HTTP GET of a path on the tuple, through the tunnel, answers 2xx or 3xx.</summary>
    Http,

    /// <summary>No check: the operator knows the new host serves the tuple (the only choice for UDP).</summary>
    None,
}

/// <summary>
/// The health gate of a move, checked from the old host: a connection marked with the migration's fwmark (SO_MARK)
/// takes the tunnel's policy route, so it reaches the new host's service exactly as moved flows will, source
/// address the tunnel's link address.
/// </summary>
public sealed record MoveCheck(MoveCheckKind Kind, string? Path = null)
{
    private const int SolSocket = 1;
    private const int SoMark = 36;
    private static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(3);

    public static MoveCheck Tcp { get; } = new(MoveCheckKind.Tcp);

    /// <summary>"tcp", "none" or "http:/PATH"; throws FormatException with the accepted forms otherwise.</summary>
    public static MoveCheck Parse(string text) => text switch
    {
        "tcp" => Tcp,
        "none" => new(MoveCheckKind.None),
        _ when text.StartsWith("http:/", StringComparison.Ordinal) && !text.Any(char.IsWhiteSpace) => new(MoveCheckKind.Http, text["http:".Length..]),
        _ => throw new FormatException($"--check '{text}' is not a check: use tcp, http:/PATH (e.g. http:/healthz) or none."),
    };

    public override string ToString() => Kind switch
    {
        MoveCheckKind.Http => "http:" + Path,
        _ => Kind.ToString().ToLowerInvariant(),
    };

    /// <summary>A reason the check is not met for <paramref name="tuple"/>, or null when it is.</summary>
    public string? Refusal(SteeredTuple tuple) =>
        tuple.Protocol == TupleProtocol.Udp && Kind != MoveCheckKind.None
            ? $"UDP tuples cannot be checked ({this} needs TCP): pass --check none once the new host serves {tuple}."
            : null;

    /// <summary>Runs the check once: null when the new host answered as required, otherwise what went wrong.</summary>
    public async Task<string?> RunAsync(SteeredTuple tuple, uint mark, CancellationToken cancellationToken)
    {
        if (Kind == MoveCheckKind.None)
        {
            return null;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(AttemptTimeout);
        using var socket = new Socket(tuple.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetRawSocketOption(SolSocket, SoMark, BitConverter.GetBytes(mark));
        }
        catch (SocketException e)
        {
            return $"could not mark the check's socket (SO_MARK needs CAP_NET_ADMIN): {e.Message}";
        }

        var endpoint = new IPEndPoint(tuple.Address, tuple.Port);
        try
        {
            await socket.ConnectAsync(endpoint, timeout.Token).ConfigureAwait(false);
            if (Kind == MoveCheckKind.Tcp)
            {
                return null;
            }

            var host = tuple.IsIPv6 ? $"[{tuple.Address}]" : tuple.Address.ToString();
            var request = string.Create(CultureInfo.InvariantCulture, $"GET {Path} HTTP/1.1\r\nHost: {host}:{tuple.Port}\r\nUser-Agent: switchover-migrate\r\nConnection: close\r\n\r\n");
            await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None, timeout.Token).ConfigureAwait(false);
            var status = await ReadStatusLineAsync(socket, timeout.Token).ConfigureAwait(false);
            var parts = status.Split(' ', 3);
            if (parts.Length < 2 || !parts[0].StartsWith("HTTP/", StringComparison.Ordinal) || !int.TryParse(parts[1], CultureInfo.InvariantCulture, out var code))
            {
                return $"GET {Path} on {tuple} through the tunnel got no HTTP answer ('{status}')";
            }

            return code is >= 200 and < 400 ? null : $"GET {Path} on {tuple} through the tunnel answered {status}";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"{tuple} did not answer through the tunnel within {AttemptTimeout.TotalSeconds:0} s";
        }
        catch (SocketException e)
        {
            return $"{tuple} through the tunnel: {e.Message} ({e.SocketErrorCode})";
        }
    }

    /// <summary>
    /// Runs the check until it passes or <paramref name="wait"/> is over (once when it is zero): null on success,
    /// otherwise the last reason.
    /// </summary>
    public async Task<string?> WaitAsync(SteeredTuple tuple, uint mark, TimeSpan wait, CancellationToken cancellationToken)
    {
        var elapsed = Stopwatch.StartNew();
        while (true)
        {
            var reason = await RunAsync(tuple, mark, cancellationToken).ConfigureAwait(false);
            if (reason is null || elapsed.Elapsed >= wait)
            {
                return reason;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task<string> ReadStatusLineAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[512];
        var length = 0;
        while (length < buffer.Length)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }

            length += read;
            var end = Array.IndexOf(buffer, (byte)'\n', 0, length);
            if (end >= 0)
            {
                return Encoding.ASCII.GetString(buffer, 0, end).TrimEnd('\r');
            }
        }

        return Encoding.ASCII.GetString(buffer, 0, length).Split('\n')[0].TrimEnd('\r');
    }
}
