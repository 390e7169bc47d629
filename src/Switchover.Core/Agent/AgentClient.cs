using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using Switchover.State;

namespace Switchover.Agent;

/// <summary>The agent refused a request: the policy does not allow it. Nothing was changed.</summary>
public sealed class AgentRefusedException(string message) : InvalidOperationException(message);

/// <summary>No agent answered at the socket within the reconnect bound.</summary>
public sealed class AgentUnavailableException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>
/// The app's side of the agent protocol: one connection per request, so that the kernel vouches for the caller each
/// time (SO_PEERCRED). A request that finds no agent (it is restarting), or whose connection drops before the answer,
/// is sent again until <paramref name="reconnectTimeout"/>: the agent keeps no state of its own, and every operation is
/// safe to repeat (a repeated register finds the generation it registered).
/// </summary>
internal sealed class AgentClient(string socketPath, TimeSpan reconnectTimeout)
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(100);

    public string SocketPath { get; } = socketPath;

    /// <summary>
    /// Sends one request and returns the agent's successful answer; a refusal or failure is thrown as the exception the
    /// local handoff would throw. <paramref name="committed"/> runs on a takeover's first answer, before the agent
    /// signals the previous generations.
    /// </summary>
    public Task<AgentResponse> SendAsync(AgentRequest request, CancellationToken cancellationToken,
        SafeHandle? descriptor = null, Action<AgentResponse>? committed = null, TimeSpan? requestTimeout = null) =>
        Task.Run(() => Send(request, cancellationToken, descriptor, committed, requestTimeout ?? TimeSpan.FromSeconds(100)), CancellationToken.None);

    /// <inheritdoc cref="SendAsync"/>
    public AgentResponse Send(AgentRequest request, CancellationToken cancellationToken, SafeHandle? descriptor = null,
        Action<AgentResponse>? committed = null, TimeSpan? requestTimeout = null)
    {
        var deadline = DateTime.UtcNow + reconnectTimeout;
        var encoded = AgentProtocol.Encode(request);
        Exception? last = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                if (TrySend(encoded, descriptor, committed, requestTimeout ?? TimeSpan.FromSeconds(100)) is { } response)
                {
                    return Check(response);
                }

                last = new IOException("the agent closed the connection before it answered (it is restarting?)");
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable
                or SocketError.ConnectionReset or SocketError.Shutdown or SocketError.TryAgain)
            {
                last = e;
            }
            catch (IOException e)
            {
                last = e;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AccessDenied)
            {
                throw new AgentUnavailableException(
                    $"This user may not connect to the agent's socket {SocketPath} ({e.Message}). Every user may connect when the " +
                    "socket is mode 0666 (SocketMode=0666 in switchover-agent.socket; the agent's policy decides who may do what).", e);
            }

            if (DateTime.UtcNow >= deadline)
            {
                throw new AgentUnavailableException(
                    $"No Switchover agent answered at {SocketPath} within {reconnectTimeout.TotalSeconds:0.#} s ({last?.Message}). " +
                    "Start it (systemctl start switchover-agent.socket, or switchover agent --socket PATH as root), " +
                    "or set Switchover:Agent=off to run the handoff in this process (needs root or CAP_NET_ADMIN).", last);
            }

            cancellationToken.WaitHandle.WaitOne(RetryDelay);
        }
    }

    private AgentResponse? TrySend(byte[] encoded, SafeHandle? descriptor, Action<AgentResponse>? committed, TimeSpan requestTimeout)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(SocketPath));
        using var connection = new LineConnection(socket);
        if (descriptor is null)
        {
            connection.Write(encoded);
        }
        else
        {
            connection.Write(encoded, descriptor);
        }

        var received = new List<int>();
        var line = connection.ReadLine(requestTimeout, received);
        CloseAll(received);
        if (line is null)
        {
            return null;
        }

        var response = Decode(line);
        if (response.Phase != "committed")
        {
            return response;
        }

        // The takeover is committed: from here on this is a success, even if the agent goes away before its last word.
        committed?.Invoke(response);
        try
        {
            connection.Write(AgentProtocol.Encode(new AgentRequest(AgentOperations.Acknowledge)));
            var done = connection.ReadLine(requestTimeout, received);
            CloseAll(received);
            if (done is not null)
            {
                // Signalling the previous generations may have failed after the swap: the swap stands, the failures are reported.
                var final = Decode(done);
                return response with { Phase = null, SignalFailures = final.SignalFailures, Message = final.Message };
            }
        }
        catch (Exception e) when (e is IOException or SocketException or TimeoutException)
        {
            // The agent went away after the commit: answered below, still "committed".
        }

        // The agent went away after the commit and before its last word: whether it signalled the previous generations
        // is unknown. Phase stays "committed" so that the caller tells them (again) through the next agent.
        return response;
    }

    private static AgentResponse Decode(byte[] line)
    {
        try
        {
            return AgentProtocol.DecodeResponse(line);
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"The agent answered something that is not the agent protocol: {AgentProtocol.Printable(line)}", e);
        }
    }

    private static AgentResponse Check(AgentResponse response) => response switch
    {
        { Ok: true } => response,
        { Error: AgentErrors.Refused } => throw new AgentRefusedException("The Switchover agent refused: " + response.Message),
        { Error: AgentErrors.Superseded, Generation: { } newer } => throw new SupersededException(newer),
        { Error: AgentErrors.LockTimeout } => throw new StateException(response.Message ?? "lock timeout") { IsLockTimeout = true },
        _ => throw new InvalidOperationException("The Switchover agent could not do it: " + response.Message),
    };

    private static void CloseAll(List<int> descriptors)
    {
        foreach (var fd in descriptors)
        {
            _ = Interop.Libc.Close(fd);
        }

        descriptors.Clear();
    }
}
