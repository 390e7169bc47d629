using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Switchover.Migration.Interop;
using CoreLibc = Switchover.Interop.Libc;

namespace Switchover.Migration.Gre;

/// <summary>
/// A long-lived host for tunnels, meant to run in the foreground under systemd (`switchover tunnel run`). It starts
/// its tunnels, then listens on a Unix socket (mode 0600) for local control, JSON lines, from root or its own user
/// only, as SO_PEERCRED tells. Nothing listens on the network. With NOTIFY_SOCKET set (systemd Type=notify) it reports
/// READY=1 once the tunnels are up. Disposing stops listening, removes the socket file and removes the tunnels.
/// </summary>
public sealed class TunnelAgent : IAsyncDisposable
{
    /// <summary>Where agents put their sockets by default.</summary>
    public const string DefaultSocketDirectory = "/run/switchover";

    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(30);

    private readonly Socket _listener;
    private readonly TextWriter _log;
    private readonly Lock _logLock = new();
    private readonly uint _uid = Libc.GetEffectiveUserId();
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource<string> _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly (ulong Device, ulong Inode)? _socketIdentity;
    private readonly List<Task> _work = [];
    private int _disposed;

    private TunnelAgent(IReadOnlyList<ITunnelDataplane> tunnels, string socketPath, Socket listener, TextWriter log)
    {
        Tunnels = tunnels;
        SocketPath = socketPath;
        _listener = listener;
        _log = log;
        _socketIdentity = CoreLibc.FileIdentity(socketPath);
    }

    /// <summary>The control socket.</summary>
    public string SocketPath { get; }

    public IReadOnlyList<ITunnelDataplane> Tunnels { get; }

    /// <summary>
    /// Completes with the reason when the agent should stop: a local client asked it to. Faults when a tunnel failed on
    /// its own. The owner then disposes the agent (the CLI also stops on SIGTERM).
    /// </summary>
    public Task<string> Stopped => _stopped.Task;

    /// <summary>`/run/switchover/tunnel-NAME.sock`.</summary>
    public static string DefaultSocketPath(string tunnelName) => Path.Combine(DefaultSocketDirectory, $"tunnel-{tunnelName}.sock");

    /// <summary>
    /// Binds the control socket at <paramref name="socketPath"/> (refusing when another agent answers there, replacing a
    /// stale file), then starts every tunnel. When a tunnel fails to start, the ones started are removed again, the
    /// socket too, and the error is thrown. Events go to <paramref name="log"/>, one line each.
    /// </summary>
    public static Task<TunnelAgent> StartAsync(IReadOnlyList<ITunnelDataplane> tunnels, string socketPath, TextWriter log, CancellationToken cancellationToken) =>
        StartAsync(tunnels, socketPath, log, UnixFileMode.UserRead | UnixFileMode.UserWrite, cancellationToken);

    // internal for testing: a wider mode lets a test connect as another user, to check that SO_PEERCRED refuses it.
    internal static async Task<TunnelAgent> StartAsync(IReadOnlyList<ITunnelDataplane> tunnels, string socketPath, TextWriter log,
        UnixFileMode socketMode, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(tunnels);
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        ArgumentNullException.ThrowIfNull(log);
        if (tunnels.Count == 0)
        {
            throw new ArgumentException("An agent needs at least one tunnel.", nameof(tunnels));
        }

        var duplicate = tunnels.GroupBy(t => (t.Options.NetworkNamespace, t.Options.Name)).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Two tunnels are named {duplicate.Key.Name}: give each its own name.", nameof(tunnels));
        }

        var listener = await ListenAsync(socketPath, socketMode, cancellationToken).ConfigureAwait(false);
        var agent = new TunnelAgent(tunnels, socketPath, listener, log);
        var started = new List<ITunnelDataplane>();
        try
        {
            foreach (var tunnel in tunnels)
            {
                await tunnel.StartAsync(cancellationToken).ConfigureAwait(false);
                started.Add(tunnel);
                agent.Log($"tunnel {Describe(tunnel)} is up");
            }
        }
        catch
        {
            foreach (var tunnel in started)
            {
                await tunnel.DisposeAsync().ConfigureAwait(false);
            }

            agent.CloseListener();
            throw;
        }

        agent._work.Add(agent.AcceptLoopAsync());
        foreach (var tunnel in tunnels)
        {
            agent._work.Add(agent.WatchAsync(tunnel));
        }

        agent.Log($"listening on {socketPath} (root and uid {agent._uid} only)");
        SystemdNotify.TrySend($"READY=1\nSTATUS=tunnels {string.Join(", ", tunnels.Select(t => t.Options.Name))} up");
        return agent;
    }

    /// <summary>The status of every tunnel, as the control socket reports it.</summary>
    public async Task<TunnelAgentStatus> GetStatusAsync(CancellationToken cancellationToken)
    {
        var tunnels = new List<TunnelStatus>();
        foreach (var tunnel in Tunnels)
        {
            var o = tunnel.Options;
            var state = tunnel.Completion switch
            {
                { IsFaulted: true } failed => "failed: " + failed.Exception!.InnerException!.Message,
                { IsCompleted: true } => "stopped",
                _ => "running",
            };
            tunnels.Add(new TunnelStatus(o.Name, tunnel.Kind, o.Local.ToString(), o.Remote.ToString(), o.Key, o.EffectiveMtu,
                o.FirewallMark, o.NetworkNamespace, state, await tunnel.GetCountersAsync(cancellationToken).ConfigureAwait(false), o.Encapsulation));
        }

        return new TunnelAgentStatus(Environment.ProcessId, _uid, tunnels);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        SystemdNotify.TrySend("STOPPING=1");
        await _stopping.CancelAsync().ConfigureAwait(false);
        CloseListener();
        using (var timeout = new CancellationTokenSource(CleanupTimeout))
        {
            await Task.WhenAll(_work).WaitAsync(timeout.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        var failures = new List<Exception>();
        foreach (var tunnel in Tunnels)
        {
            // Every tunnel is removed, whatever happens to the others.
            try
            {
                var counters = await tunnel.GetCountersAsync(CancellationToken.None).ConfigureAwait(false);
                await tunnel.DisposeAsync().ConfigureAwait(false);
                Log($"tunnel {tunnel.Options.Name} removed; tx {counters.TxPackets} packets {counters.TxBytes} bytes {counters.TxErrors} errors, " +
                    $"rx {counters.RxPackets} packets {counters.RxBytes} bytes {counters.RxErrors} errors, dropped {counters.RxStray} stray " +
                    $"{counters.RxWrongKey} wrong-key {counters.RxMalformed} malformed");
            }
#pragma warning disable CA1031 // Collected and rethrown below, after the other tunnels are gone too.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log($"removing tunnel {tunnel.Options.Name} failed: {e.Message}");
                failures.Add(e);
            }
        }

        _stopped.TrySetResult("disposed");
        _stopping.Dispose();
        if (failures.Count > 0)
        {
            throw new AggregateException("Not every tunnel could be removed.", failures);
        }
    }

    private static string Describe(ITunnelDataplane tunnel)
    {
        var o = tunnel.Options;
        return $"{o.Name}: {(tunnel.Kind == GreDataplaneKind.Kernel ? "kernel" : "userspace")} GRE {o.Local} -> {o.Remote}" +
            (o.Key is { } key ? $", key {key}" : ", no key") + $", mtu {o.EffectiveMtu}" +
            (o.FirewallMark is { } mark ? $", mark 0x{mark:x}" : "") + (o.NetworkNamespace is { } ns ? $", namespace {ns}" : "");
    }

    private static async Task<Socket> ListenAsync(string socketPath, UnixFileMode mode, CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("The tunnel agent runs on Linux only (SO_PEERCRED, TUN devices, raw GRE sockets).");
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(socketPath))!;
        if (!Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }

        if (File.Exists(socketPath) || CoreLibc.FileIdentity(socketPath) is not null)
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await probe.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
                throw new TunnelException($"Another tunnel agent is listening on {socketPath}. Stop it first " +
                    "(switchover tunnel stop), or give this one another --name or --socket.");
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable)
            {
                // Nobody listens: a crashed agent's leftover. Replaced below.
            }
        }

        // Bound under a temporary name, restricted, then renamed into place: at no moment does the socket exist at its
        // real path with the default (umask) mode.
        var temporary = Path.Combine(directory, $".{Path.GetFileName(socketPath)}.{RandomNumberGenerator.GetHexString(8, lowercase: true)}");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(temporary));
            File.SetUnixFileMode(temporary, mode);
            File.Move(temporary, socketPath, overwrite: true);
            listener.Listen(16);
            return listener;
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException)
        {
            listener.Dispose();
            File.Delete(temporary);
            throw new TunnelException($"Could not listen on {socketPath}: {e.Message}. Run as root, or choose a --socket in a directory you may write.", e);
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _listener.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException && _stopping.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of descriptors, say: the tunnels go on; control comes back when the condition passes.
                Log($"accepting a control connection failed: {e.Message}");
                await Task.Delay(TimeSpan.FromMilliseconds(200), CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            _ = ServeAsync(connection);
        }
    }

    private async Task ServeAsync(Socket connection)
    {
        using var owned = connection;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        timeout.CancelAfter(RequestTimeout);
        try
        {
            var peer = PeerCredentials.Read(connection);
            await using var stream = new NetworkStream(connection, ownsSocket: false);
            using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, TunnelAgentProtocol.MaxRequestLength);
            var buffer = new char[TunnelAgentProtocol.MaxRequestLength];
            if (!PeerCredentials.IsAllowed(peer.Uid, _uid))
            {
                // The request is read (not parsed) before the refusal is sent: a client still writing to a socket
                // already closed would get EPIPE instead of the reason.
                Log($"refused a control connection from {peer}: only root and uid {_uid} may control this agent");
                _ = await ReadLineAsync(reader, buffer, timeout.Token).ConfigureAwait(false);
                await WriteAsync(stream, new AgentResponse(false, $"permission denied: uid {peer.Uid} is neither root nor the agent's uid {_uid}"),
                    timeout.Token).ConfigureAwait(false);
                return;
            }

            while (await ReadLineAsync(reader, buffer, timeout.Token).ConfigureAwait(false) is { } line)
            {
                var command = TunnelAgentProtocol.ParseCommand(line);
                switch (command)
                {
                    case TunnelAgentProtocol.Status:
                        AgentResponse response;
                        try
                        {
                            response = new AgentResponse(true, Status: await GetStatusAsync(timeout.Token).ConfigureAwait(false));
                        }
                        catch (Exception e) when (e is Switchover.Processes.CommandException or System.Text.Json.JsonException)
                        {
                            // A kernel link's counters come from `ip -s -j link`, which can fail.
                            response = new AgentResponse(false, "could not read the counters: " + e.Message);
                        }

                        await WriteAsync(stream, response, timeout.Token).ConfigureAwait(false);
                        break;
                    case TunnelAgentProtocol.Stop:
                        Log($"stop requested by {peer}");
                        await WriteAsync(stream, new AgentResponse(true, Message: "stopping"), timeout.Token).ConfigureAwait(false);
                        _stopped.TrySetResult($"stop requested by {peer}");
                        return;
                    default:
                        await WriteAsync(stream, new AgentResponse(false, $"unknown request '{Truncate(line)}': send {{\"command\":\"status\"}} or {{\"command\":\"stop\"}}"),
                            timeout.Token).ConfigureAwait(false);
                        break;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            // The client went away, was too slow, or sent a line too long: its connection ends, the agent goes on.
        }
    }

    /// <summary>One line of at most MaxRequestLength characters; null at end of stream; throws past the limit.</summary>
    private static async Task<string?> ReadLineAsync(StreamReader reader, char[] buffer, CancellationToken cancellationToken)
    {
        var length = 0;
        var one = new char[1];
        while (true)
        {
            var read = await reader.ReadAsync(one.AsMemory(), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return length > 0 ? new string(buffer, 0, length) : null;
            }

            if (one[0] == '\n')
            {
                return new string(buffer, 0, length);
            }

            if (length == buffer.Length)
            {
                throw new InvalidOperationException("request line too long");
            }

            buffer[length++] = one[0];
        }
    }

    private static async Task WriteAsync(Stream stream, AgentResponse response, CancellationToken cancellationToken)
    {
        var bytes = Encoding.UTF8.GetBytes(TunnelAgentProtocol.Response(response) + "\n");
        await stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
    }

    private static string Truncate(string text) => text.Length <= 80 ? text : text[..80] + "…";

    private async Task WatchAsync(ITunnelDataplane tunnel)
    {
        try
        {
            await tunnel.Completion.WaitAsync(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
#pragma warning disable CA1031 // A tunnel's failure is reported through Stopped, to the agent's owner.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log($"tunnel {tunnel.Options.Name} failed: {e.Message}");
            _stopped.TrySetException(new TunnelException($"Tunnel {tunnel.Options.Name} failed: {e.Message}", e));
            return;
        }

        if (!_stopping.IsCancellationRequested)
        {
            _stopped.TrySetException(new TunnelException($"Tunnel {tunnel.Options.Name} stopped on its own."));
        }
    }

    private void CloseListener()
    {
        _listener.Dispose();

        // Only our own socket file: another agent may have replaced a file it took for stale.
        if (_socketIdentity is { } identity && CoreLibc.FileIdentity(SocketPath) == identity)
        {
            File.Delete(SocketPath);
        }
    }

    private void Log(string message)
    {
        lock (_logLock)
        {
            _log.WriteLine("switchover tunnel: " + message);
            _log.Flush();
        }
    }
}
