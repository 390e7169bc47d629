using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;

namespace Switchover.Hosting;

/// <summary>What one HTTP/1.1 readiness request found.</summary>
/// <remarks>
/// A class, not a struct: <c>Task&lt;T&gt;</c> and its builder and awaiters over a struct of ours are JIT-compiled in every
/// generation (the framework's image holds them only for reference types, and ours may not), on the launch's critical path.
/// </remarks>
internal sealed record StatusLineAnswer(int? Status, string? Failure, bool NotHttp11)
{
    public static StatusLineAnswer Answered(int status) => new(status, null, false);

    public static StatusLineAnswer Failed(string failure) => new(null, failure, false);

    /// <summary>The endpoint answered, but not in HTTP/1.1 (it speaks only HTTP/2): ask it with HTTP/2 instead.</summary>
    public static StatusLineAnswer OtherProtocol(string what) => new(null, what, true);
}

/// <summary>
/// The readiness request on a plain socket: <c>GET path HTTP/1.1</c> with <c>Connection: close</c>, and the status line
/// of the answer, as HAProxy's <c>option httpchk</c> reads it. Nothing else of the answer is interpreted.
/// </summary>
/// <remarks>
/// Why not <see cref="HttpClient"/> for this one request: it is the first HTTP client in most server processes, and
/// loading and compiling it was the largest part of what Switchover added to a generation (System.Net.Http,
/// NameResolution and Security loaded, about 3 MB resident, and 200 to 600 ms on the launch's critical path before
/// the probe's first answer; docs/kernel-speed.md has the run). A status line needs none of it. Endpoints that do not
/// speak HTTP/1.1 (HTTP/2 only, cleartext or over TLS) are still asked through <see cref="HttpClient"/>.
/// </remarks>
internal static class StatusLineProbe
{
    private const int MaxStatusLine = 8 * 1024;

    /// <summary>How much of the body is read (and dropped) so that closing does not reset the server's connection.</summary>
    private const int MaxDrained = 256 * 1024;

    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(1);

    /// <remarks>
    /// One async method from the connect to the drain, not one per step: each async method that has to wait costs a
    /// generation a dozen JIT-compiled framework methods (its state machine's box), which no ReadyToRun image of ours
    /// can hold, and this request is on the launch's critical path (docs/kernel-speed.md).
    /// </remarks>
    public static async Task<StatusLineAnswer> GetAsync(IPEndPoint endpoint, bool tls, string path, string? serverName, CancellationToken cancellationToken)
    {
        using var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            return StatusLineAnswer.Failed($"connecting to {endpoint} failed: {e.Message}");
        }

        Stream stream = new NetworkStream(socket, ownsSocket: false);
        try
        {
            if (tls)
            {
                // In a method of its own, so that a process with no TLS endpoint never loads System.Net.Security.
                (stream, var refused) = await Tls.AuthenticateAsync(stream, serverName, cancellationToken).ConfigureAwait(false);
                if (refused is not null)
                {
                    return StatusLineAnswer.OtherProtocol($"the TLS handshake offering http/1.1 failed: {refused}");
                }
            }

            // IPEndPoint writes an IPv6 address in brackets, as a Host header needs it.
            var request = Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nUser-Agent: Switchover-readiness\r\nConnection: close\r\n\r\n");
            try
            {
                await stream.WriteAsync(request, cancellationToken).ConfigureAwait(false);

                var buffer = new byte[MaxStatusLine];
                var length = 0;
                int end;
                while ((end = buffer.AsSpan(0, length).IndexOf("\r\n"u8)) < 0)
                {
                    if (NoStatusLine(buffer.AsSpan(0, length)) is { } refusal)
                    {
                        return refusal;
                    }

                    var read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false);
                    if (read == 0)
                    {
                        return length == 0
                            ? StatusLineAnswer.OtherProtocol("the connection was closed with no answer")
                            : StatusLineAnswer.Failed("the connection was closed inside the status line");
                    }

                    length += read;
                }

                var answer = Parse(buffer.AsSpan(0, end));
                if (answer.Status is null)
                {
                    return answer;
                }

                // What follows the status line is read until the server closes (it was asked to), at most 256 KiB
                // and 1 s, so that closing does not reset the server's connection: the status is what was asked, how
                // the server ends the connection after it is not.
                using var drainBound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                drainBound.CancelAfter(DrainTimeout);
                var drained = length - end;
                try
                {
                    int chunk;
                    while (drained < MaxDrained && (chunk = await stream.ReadAsync(buffer, drainBound.Token).ConfigureAwait(false)) > 0)
                    {
                        drained += chunk;
                    }
                }
                catch (IOException)
                {
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                }

                return answer;
            }
            catch (IOException e)
            {
                return StatusLineAnswer.Failed($"GET {path} on {endpoint} failed: {e.Message}");
            }
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Why what was received so far, with no line end yet, cannot become an HTTP/1.1 status line; null while it can.</summary>
    private static StatusLineAnswer? NoStatusLine(ReadOnlySpan<byte> received)
    {
        if (received.Length > 0 && !"HTTP/1."u8.StartsWith(received[..Math.Min(received.Length, 7)]))
        {
            return StatusLineAnswer.OtherProtocol("the answer is not HTTP/1.1");
        }

        return received.Length == MaxStatusLine ? StatusLineAnswer.Failed("the status line is longer than 8 KiB") : null;
    }

    /// <summary>Parses <c>HTTP/1.x NNN reason</c>.</summary>
    internal static StatusLineAnswer Parse(ReadOnlySpan<byte> line)
    {
        if (!line.StartsWith("HTTP/1."u8))
        {
            return StatusLineAnswer.OtherProtocol("the answer is not HTTP/1.1");
        }

        if (line.Length < 12 || line[8] != (byte)' '
            || !int.TryParse(line.Slice(9, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var status) || status < 100)
        {
            return StatusLineAnswer.Failed($"the status line '{Encoding.ASCII.GetString(line[..Math.Min(line.Length, 80)])}' has no status code");
        }

        return StatusLineAnswer.Answered(status);
    }

    private static class Tls
    {
        /// <returns>The TLS stream, or why the handshake failed.</returns>
        public static async Task<(Stream Stream, string? Refused)> AuthenticateAsync(Stream network, string? serverName, CancellationToken cancellationToken)
        {
            var ssl = new SslStream(network, leaveInnerStreamOpen: false);
            try
            {
                await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
                {
                    TargetHost = serverName ?? string.Empty,
                    // Offered alone: an endpoint that speaks only HTTP/2 refuses the handshake, and is then asked with HTTP/2.
                    ApplicationProtocols = [SslApplicationProtocol.Http11],
                    // The probe asks a private port of this service on loopback, not a peer: the certificate is the
                    // one it serves, whatever names or issuer it carries, and nothing secret is sent.
#pragma warning disable CA5359
                    RemoteCertificateValidationCallback = (_, _, _, _) => true,
#pragma warning restore CA5359
                }, cancellationToken).ConfigureAwait(false);
                return (ssl, null);
            }
            catch (Exception e) when (e is AuthenticationException or IOException)
            {
                return (ssl, e.Message);
            }
        }
    }
}
