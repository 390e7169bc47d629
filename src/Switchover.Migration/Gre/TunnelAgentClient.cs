using System.Net.Sockets;
using System.Text;

namespace Switchover.Migration.Gre;

/// <summary>Talks to a <see cref="TunnelAgent"/> over its Unix socket: as root or as the agent's user.</summary>
public static class TunnelAgentClient
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    /// <summary>The agent's tunnels and their counters. Throws <see cref="TunnelException"/> when no agent answers or it refuses.</summary>
    public static async Task<TunnelAgentStatus> GetStatusAsync(string socketPath, CancellationToken cancellationToken)
    {
        var response = await SendAsync(socketPath, TunnelAgentProtocol.Status, cancellationToken).ConfigureAwait(false);
        return response.Status ?? throw new TunnelException($"The agent at {socketPath} answered without a status.");
    }

    /// <summary>Asks the agent to remove its tunnels and exit. Returns once it has acknowledged.</summary>
    public static async Task StopAsync(string socketPath, CancellationToken cancellationToken) =>
        await SendAsync(socketPath, TunnelAgentProtocol.Stop, cancellationToken).ConfigureAwait(false);

    internal static async Task<AgentResponse> SendAsync(string socketPath, string command, CancellationToken cancellationToken)
    {
        var line = await SendRawAsync(socketPath, TunnelAgentProtocol.Request(command), cancellationToken).ConfigureAwait(false);
        var response = TunnelAgentProtocol.ParseResponse(line) ?? throw new TunnelException($"The agent at {socketPath} answered nothing readable.");
        return response.Ok ? response : throw new TunnelException($"The agent at {socketPath} refused '{command}': {response.Error}");
    }

    /// <summary>Sends one request line and returns the response line, as it came.</summary>
    internal static async Task<string> SendRawAsync(string socketPath, string request, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Timeout);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), timeout.Token).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw new TunnelException(e.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused =>
                    $"No tunnel agent is running at {socketPath} ({e.Message}). Start one with 'switchover tunnel run', or give the right --name or --socket.",
                SocketError.AccessDenied =>
                    $"May not connect to {socketPath} ({e.Message}): run as root or as the user the agent runs as.",
                _ => $"Could not connect to the tunnel agent at {socketPath}: {e.Message}",
            }, e);
        }

        await using var stream = new NetworkStream(socket, ownsSocket: false);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        try
        {
            await stream.WriteAsync(Encoding.UTF8.GetBytes(request + "\n"), timeout.Token).ConfigureAwait(false);
            return await reader.ReadLineAsync(timeout.Token).ConfigureAwait(false)
                ?? throw new TunnelException($"The agent at {socketPath} closed the connection without answering.");
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TunnelException($"The agent at {socketPath} did not answer within {Timeout.TotalSeconds:0} s.", e);
        }
        catch (IOException e)
        {
            throw new TunnelException($"The connection to the agent at {socketPath} broke: {e.Message}", e);
        }
    }
}
