using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using Switchover.Interop;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Agent;

/// <summary>Where the agent listens, what it obeys, which tools it runs.</summary>
public sealed class HandoffAgentSettings
{
    /// <summary>The socket path to bind when systemd passed no socket. Default: /run/switchover/agent.sock.</summary>
    public string SocketPath { get; init; } = HandoffAgent.DefaultSocketPath;

    public string StateRoot { get; init; } = StateStore.DefaultRoot;

    public string? NftPath { get; init; }

    public string? ConntrackPath { get; init; }

    /// <summary>How often the state directory is read again for generations that did not come through the agent (root apps).</summary>
    public TimeSpan RescanInterval { get; init; } = TimeSpan.FromSeconds(2);
}

/// <summary>
/// The privileged half of a handoff for apps that run without privileges (<c>switchover agent</c>): it applies the
/// tables, marks the apps' private listeners IP_TRANSPARENT, counts their conntrack flows, signals the generations they
/// supersede, holds a pidfd for every generation and repairs a namespace the moment its active generation dies.
/// Clients speak JSON lines over a Unix socket; the kernel says who they are (SO_PEERCRED, SO_PEERPIDFD) and the
/// policy says what they may do. It keeps no state of its own beyond the namespaces' state files, so a restart loses
/// nothing: it re-opens a pidfd for every live generation when it starts.
/// </summary>
internal sealed class HandoffAgent : IAsyncDisposable
{
    public const string DefaultSocketPath = "/run/switchover/agent.sock";

    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan AcknowledgeTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MaxLockTimeout = TimeSpan.FromSeconds(60);

    private readonly HandoffAgentSettings _settings;
    private readonly AgentPolicy _policy;
    private readonly Socket _listener;
    private readonly bool _ownsSocketFile;
    private readonly TextWriter _log;
    private readonly Lock _logLock = new();
    private readonly PidfdWatcher _watcher = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly (ulong, ulong)? _networkNamespace = Libc.FileIdentity("/proc/self/ns/net");
    private readonly List<Task> _loops = [];
    private readonly HashSet<Task> _requests = [];
    private int _disposed;

    private HandoffAgent(HandoffAgentSettings settings, AgentPolicy policy, Socket listener, bool ownsSocketFile, string listening, TextWriter log)
    {
        _settings = settings;
        _policy = policy;
        _listener = listener;
        _ownsSocketFile = ownsSocketFile;
        Listening = listening;
        _log = log;
    }

    /// <summary>Where clients connect: the socket path, or what systemd passed.</summary>
    public string Listening { get; }

    /// <summary>How many generations have a pidfd held right now.</summary>
    public int Watched => _watcher.Count;

    /// <summary>
    /// Starts the agent on the socket systemd passed (LISTEN_FDS), else on <see cref="HandoffAgentSettings.SocketPath"/>;
    /// watches every live generation recorded under the state root and repairs namespaces whose active one died meanwhile.
    /// </summary>
    public static async Task<HandoffAgent> StartAsync(HandoffAgentSettings settings, AgentPolicy policy, TextWriter log, CancellationToken cancellationToken)
    {
        Socket listener;
        string listening;
        var owns = false;
        var activated = SystemdSockets.Take();
        if (activated.Count > 1)
        {
            foreach (var extra in activated.Skip(1))
            {
                extra.Dispose();
            }

            throw new InvalidOperationException($"systemd passed {activated.Count} sockets; the agent serves one. Give its .socket unit one ListenStream=.");
        }

        if (activated.Count == 1)
        {
            listener = activated[0];
            listening = $"the socket systemd passed ({DescribeEndpoint(listener)})";
        }
        else
        {
            listener = await ListenAsync(settings.SocketPath, cancellationToken).ConfigureAwait(false);
            listening = settings.SocketPath;
            owns = true;
        }

        var agent = new HandoffAgent(settings, policy, listener, owns, listening, log);
        agent.Log($"policy {policy.Path}: namespaces {(policy.Namespaces.Count == 0 ? "(none: root only)" : string.Join(", ", policy.Namespaces.Order(StringComparer.Ordinal)))}");
        agent.Rescan(announce: true);
        agent._loops.Add(Task.Run(agent.AcceptLoopAsync, CancellationToken.None));
        agent._loops.Add(Task.Run(agent.RepairLoopAsync, CancellationToken.None));
        agent._loops.Add(Task.Run(agent.RescanLoopAsync, CancellationToken.None));
        agent.Log($"listening on {listening}; state {settings.StateRoot}; watching {agent.Watched} generation(s)");
        return agent;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        Task[] pending;
        lock (_requests)
        {
            pending = [.. _requests, .. _loops];
        }

        await Task.WhenAll(pending).WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _watcher.Dispose();
        if (_ownsSocketFile)
        {
            try
            {
                File.Delete(_settings.SocketPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log($"could not remove {_settings.SocketPath}: {e.Message}");
            }
        }

        _stopping.Dispose();
        Log("stopped; the generations keep running and their tables stay (a new agent watches them again)");
    }

    private static string DescribeEndpoint(Socket socket)
    {
        try
        {
            return socket.LocalEndPoint?.ToString() ?? "unnamed";
        }
        catch (SocketException)
        {
            return "unnamed";
        }
    }

    private static async Task<Socket> ListenAsync(string socketPath, CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("The Switchover agent runs on Linux only (SO_PEERCRED, pidfds, nftables).");
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(socketPath))!;
        Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
            UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        if (Libc.FileIdentity(socketPath) is not null)
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await probe.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
                throw new InvalidOperationException($"Another agent is listening on {socketPath}. Stop it first, or give this one another --socket.");
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable)
            {
                // Nobody listens: a killed agent's leftover. Replaced below.
            }
        }

        // Bound under a temporary name, given its mode, then renamed into place: clients never see a half-made socket.
        // Anyone may connect (0666): who may do what is the policy's to say, from the kernel's credentials.
        var temporary = Path.Combine(directory, $".{Path.GetFileName(socketPath)}.{RandomNumberGenerator.GetHexString(8, lowercase: true)}");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(temporary));
            File.SetUnixFileMode(temporary, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead |
                UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
            File.Move(temporary, socketPath, overwrite: true);
            listener.Listen(64);
            return listener;
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException)
        {
            listener.Dispose();
            File.Delete(temporary);
            throw new IOException($"Could not listen on {socketPath}: {e.Message}. Run the agent as root, or choose another --socket.", e);
        }
    }

    private void Log(string line)
    {
        lock (_logLock)
        {
            _log.WriteLine($"{DateTime.UtcNow.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture)} switchover agent: {line}");
            _log.Flush();
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
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException || _stopping.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                Log($"accepting a connection failed: {e.Message}");
                await Task.Delay(TimeSpan.FromMilliseconds(200), CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            var task = Task.Run(() => ServeAsync(connection), CancellationToken.None);
            lock (_requests)
            {
                _requests.Add(task);
            }

            _ = task.ContinueWith(t =>
            {
                lock (_requests)
                {
                    _requests.Remove(t);
                }
            }, TaskScheduler.Default);
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using var connection = new LineConnection(socket);
        var descriptors = new List<int>();
        AgentPeer? peer = null;
        try
        {
            peer = AgentPeer.Read(socket);
            var line = connection.ReadLine(RequestTimeout, descriptors);
            if (line is null)
            {
                return;
            }

            AgentRequest request;
            try
            {
                request = AgentProtocol.DecodeRequest(line);
            }
            catch (JsonException e)
            {
                Reply(connection, AgentResponse.Fail(AgentErrors.BadRequest, $"Not an agent request: {e.Message}"));
                return;
            }

            var response = await HandleAsync(connection, peer, request, descriptors).ConfigureAwait(false);
            if (response.Error == AgentErrors.Refused)
            {
                Log($"refused {request.Op} from {peer}: {response.Message}");
            }

            Reply(connection, response);
        }
#pragma warning disable CA1031 // One client's broken connection must not stop the agent; it is logged.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log($"request from {(peer?.ToString() ?? "an unknown peer")} failed: {e.Message}");
        }
        finally
        {
            foreach (var fd in descriptors)
            {
                _ = Libc.Close(fd);
            }
        }
    }

    private static void Reply(LineConnection connection, AgentResponse response)
    {
        try
        {
            connection.Write(AgentProtocol.Encode(response));
        }
        catch (SocketException)
        {
            // The client went away; what was done stays done, and it asks again when it comes back.
        }
    }

    private async Task<AgentResponse> HandleAsync(LineConnection connection, AgentPeer peer, AgentRequest request, List<int> descriptors)
    {
        if (peer.Process is null)
        {
            return AgentResponse.Fail(AgentErrors.Refused, $"{peer} exited before its request was read.");
        }

        if (_networkNamespace is { } own && Libc.FileIdentity($"/proc/{peer.Pid.ToString(CultureInfo.InvariantCulture)}/ns/net") is { } theirs && theirs != own)
        {
            return AgentResponse.Fail(AgentErrors.Refused,
                $"pid {peer.Pid} runs in another network namespace than this agent (whose tables live in its own); run an agent " +
                "inside that network namespace, with its own socket.");
        }

        if (request.Namespace is null || NamespaceName.Validate(request.Namespace) is not null)
        {
            return AgentResponse.Fail(AgentErrors.BadRequest,
                NamespaceName.Validate(request.Namespace) ?? $"Request '{request.Op}' names no namespace.");
        }

        var name = NamespaceName.Parse(request.Namespace);
        if (_policy.MayUse(peer, name) is { } refused)
        {
            return AgentResponse.Fail(AgentErrors.Refused, refused);
        }

        var lockTimeout = request.LockTimeoutMs is > 0 and var ms
            ? TimeSpan.FromMilliseconds(Math.Min(ms, MaxLockTimeout.TotalMilliseconds))
            : TimeSpan.FromSeconds(30);
        var handoff = Handoff.Create(_settings.StateRoot, name, lockTimeout, _settings.NftPath);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        timeout.CancelAfter(lockTimeout + TimeSpan.FromSeconds(30));
        try
        {
            return request.Op switch
            {
                AgentOperations.Check => await CheckAsync(handoff, timeout.Token).ConfigureAwait(false),
                AgentOperations.Transparent => MakeTransparent(peer, name, descriptors),
                AgentOperations.Register => await RegisterAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.TakeOver => await TakeOverAsync(connection, handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.StepDown => await StepDownAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.Leave => await LeaveAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.Flows => await FlowsAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.Repair => await RepairRequestAsync(handoff, peer, timeout.Token).ConfigureAwait(false),
                AgentOperations.Rollback => await RollbackAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.EndRollbackWindow => await EndRollbackWindowAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                AgentOperations.SignalToDrain => await SignalToDrainAsync(handoff, peer, request, timeout.Token).ConfigureAwait(false),
                _ => AgentResponse.Fail(AgentErrors.BadRequest, $"Unknown operation '{request.Op}'."),
            };
        }
        catch (SupersededException e)
        {
            return AgentResponse.Fail(AgentErrors.Superseded, e.Message) with { Generation = e.Newer };
        }
        catch (StateException e) when (e.IsLockTimeout)
        {
            return AgentResponse.Fail(AgentErrors.LockTimeout, e.Message);
        }
        catch (Exception e) when (e is StateException or NftException or InvalidOperationException or IOException or CommandException)
        {
            Log($"{request.Op} of namespace '{name}' for {peer} failed: {e.Message}");
            return AgentResponse.Fail(AgentErrors.Failed, e.Message);
        }
    }

    private async Task<AgentResponse> CheckAsync(Handoff handoff, CancellationToken cancellationToken)
    {
        await handoff.CheckAsync(cancellationToken).ConfigureAwait(false);
        await ConntrackClient.Create(_settings.ConntrackPath).CheckAsync(cancellationToken).ConfigureAwait(false);
        return new AgentResponse(true) { StateDirectory = _settings.StateRoot };
    }

    /// <summary>
    /// IP_TRANSPARENT needs CAP_NET_ADMIN (or CAP_NET_RAW) of whoever sets it, not of whoever owns the socket, so the
    /// agent sets it on the app's own listener, received over the connection. Only on a TCP socket already bound to a
    /// wildcard address and a port: an unbound transparent socket could bind a foreign address and spoof sources.
    /// </summary>
    private AgentResponse MakeTransparent(AgentPeer peer, NamespaceName name, List<int> descriptors)
    {
        if (descriptors.Count != 1)
        {
            return AgentResponse.Fail(AgentErrors.BadRequest, $"'transparent' needs exactly one socket sent with it (SCM_RIGHTS); {descriptors.Count} came.");
        }

        var fd = descriptors[0];
        var domain = Libc.GetSocketOptionInt(fd, Libc.SOL_SOCKET, Libc.SO_DOMAIN, out _);
        var type = Libc.GetSocketOptionInt(fd, Libc.SOL_SOCKET, Libc.SO_TYPE, out _);
        var protocol = Libc.GetSocketOptionInt(fd, Libc.SOL_SOCKET, Libc.SO_PROTOCOL, out _);
        if (domain is not (Libc.AF_INET or Libc.AF_INET6) || type != Libc.SOCK_STREAM || protocol != Libc.IPPROTO_TCP)
        {
            return AgentResponse.Fail(AgentErrors.Refused, "The descriptor sent is not a TCP socket of IPv4 or IPv6; only private listeners are made transparent.");
        }

        var bound = Libc.GetSocketName(fd);
        if (bound is null || bound.Port == 0 || !(bound.Address.Equals(IPAddress.Any) || bound.Address.Equals(IPAddress.IPv6Any)))
        {
            return AgentResponse.Fail(AgentErrors.Refused,
                $"The socket sent is bound to {bound?.ToString() ?? "nothing"}; only a socket already bound to a port on every address " +
                "(0.0.0.0 or [::], as Switchover binds its private listeners) is made transparent.");
        }

        var errno = domain == Libc.AF_INET6
            ? Libc.SetSocketOptionInt(fd, Libc.SOL_IPV6, Libc.IPV6_TRANSPARENT, 1)
            : Libc.SetSocketOptionInt(fd, Libc.SOL_IP, Libc.IP_TRANSPARENT, 1);
        if (errno != 0)
        {
            return AgentResponse.Fail(AgentErrors.Failed, $"setsockopt IP_TRANSPARENT failed (errno {errno}): the agent needs CAP_NET_ADMIN; run it as root.");
        }

        Log($"listener {bound} of {peer} (namespace '{name}') marked IP_TRANSPARENT");
        return new AgentResponse(true);
    }

    private async Task<AgentResponse> RegisterAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (request.Ports is not { Count: > 0 } ports || request.Steering is not { } steering || !Enum.IsDefined(steering))
        {
            return AgentResponse.Fail(AgentErrors.BadRequest, "'register' needs ports and a steering.");
        }

        if (_policy.MayTakeOver(peer, handoff.Name, ports.Select(p => p.PublicPort)) is { } refused)
        {
            return AgentResponse.Fail(AgentErrors.Refused, refused);
        }

        foreach (var port in ports)
        {
            if (port.PrivatePort is < 1 or > 65535 || !ListenerOwnership.Listens(peer.Pid, port.PrivatePort))
            {
                return AgentResponse.Fail(AgentErrors.Refused,
                    $"pid {peer.Pid} does not listen on private port {port.PrivatePort}; a generation registers only the ports it listens on.");
            }
        }

        // A retry after the agent restarted mid-request: the registration may have happened already.
        var registered = Own(handoff, peer);
        Registration registration;
        if (registered is not null)
        {
            registration = new Registration(registered, []);
        }
        else
        {
            registration = await handoff.RegisterAsync(peer.Process!, ports, steering, TimeSpan.FromMilliseconds(request.RollbackWindowMs ?? 0), cancellationToken)
                .ConfigureAwait(false);
            Log($"namespace '{handoff.Name}': generation {registration.Generation.Id} registered for {peer}, ports " +
                string.Join(",", ports.Select(p => $"{p.Public}->{p.PrivatePort}")) + $", steering {steering}");
        }

        Watch(handoff.Name, registration.Generation);
        return new AgentResponse(true) { Generation = registration.Generation, StaleRemoved = registration.StaleRemoved, StateDirectory = _settings.StateRoot };
    }

    private async Task<AgentResponse> TakeOverAsync(LineConnection connection, Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var result = await handoff.TakeOverAsync(request.Generation!.Value, cancellationToken, (taken, state) =>
        {
            // The client tells systemd (MAINPID) before the previous generation is signalled, as without the agent.
            Reply(connection, new AgentResponse(true)
            {
                Phase = "committed",
                Generation = taken.Generation,
                Previous = taken.Previous,
                StaleRemoved = taken.StaleRemoved,
                Ruleset = taken.Ruleset,
                TransactionMs = taken.RuleTransaction.TotalMilliseconds,
                State = state,
            });
            try
            {
                connection.ReadLine(AcknowledgeTimeout, []);
            }
            catch (Exception e) when (e is TimeoutException or IOException or SocketException)
            {
                Log($"generation {taken.Generation.Id} did not acknowledge its takeover ({e.Message}); signalling the previous anyway");
            }
        }).ConfigureAwait(false);
        Log($"namespace '{handoff.Name}': generation {(result.Previous.Count == 0 ? "(none)" : string.Join(",", result.Previous.Select(g => g.Id)))} -> " +
            $"{result.Generation.Id} (pid {result.Generation.Pid}), rule transaction {result.RuleTransaction.TotalMilliseconds:0.0} ms");
        foreach (var failure in result.SignalFailures)
        {
            Log($"namespace '{handoff.Name}': generation {failure.Generation.Id} (pid {failure.Generation.Pid}) was not told to drain: {failure.Error}");
        }

        RefreshWatches(handoff);
        return new AgentResponse(true) { Generation = result.Generation, SignalFailures = result.SignalFailures };
    }

    private async Task<AgentResponse> RepairRequestAsync(Handoff handoff, AgentPeer peer, CancellationToken cancellationToken)
    {
        if (!IsGenerationOf(handoff, peer))
        {
            return AgentResponse.Fail(AgentErrors.Refused, $"{peer} is no generation of namespace '{handoff.Name}'; only its generations ask for a repair.");
        }

        var repair = await handoff.RepairAsync(cancellationToken).ConfigureAwait(false);
        LogRepair(handoff.Name, repair, $"asked by {peer}");
        RefreshWatches(handoff);
        return new AgentResponse(true) { Repair = repair };
    }

    private async Task<AgentResponse> RollbackAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var result = await handoff.RollbackAsync(request.Generation!.Value, request.Force ?? false, request.From, cancellationToken).ConfigureAwait(false);
        Log($"namespace '{handoff.Name}': rollback to generation {request.Generation}{(request.Force == true ? " (forced)" : string.Empty)}: {result.Outcome}, {result.Reason}");
        RefreshWatches(handoff);
        return new AgentResponse(true) { Rollback = result };
    }

    private static async Task<AgentResponse> EndRollbackWindowAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var state = await handoff.EndRollbackWindowAsync(request.Generation!.Value, cancellationToken).ConfigureAwait(false);
        return new AgentResponse(true) { GenerationState = state };
    }

    private static async Task<AgentResponse> SignalToDrainAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (request.Generation is not { } id)
        {
            return AgentResponse.Fail(AgentErrors.BadRequest, "'signalToDrain' needs a generation id.");
        }

        if (!IsGenerationOf(handoff, peer))
        {
            return AgentResponse.Fail(AgentErrors.Refused, $"{peer} is no generation of namespace '{handoff.Name}'; only its generations tell others to drain.");
        }

        var failure = await handoff.SignalToDrainAsync(id, cancellationToken).ConfigureAwait(false);
        return new AgentResponse(true) { SignalFailure = failure };
    }

    private static bool IsGenerationOf(Handoff handoff, AgentPeer peer) =>
        handoff.Store.ReadUnlocked()?.Generations.Any(g => g.Process == peer.Process) ?? false;

    private void LogRepair(NamespaceName name, RepairResult repair, string why)
    {
        if (!repair.Applied && repair.StaleRemoved.Count == 0)
        {
            return;
        }

        Log($"namespace '{name}': repaired ({why}): " + (repair.NamespaceRemoved
            ? "no generation left; table and state removed"
            : repair.Promoted is { } promoted ? $"generation {promoted.Id} (pid {promoted.Pid}) rolled back to, within its rollback window"
            : repair.Active is { } active ? $"generation {active.Id} (pid {active.Pid}) is active"
            : "no generation is active: the public ports are not steered (nothing can capture them) until the next takeover"));
    }

    private async Task<AgentResponse> StepDownAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var stepped = await handoff.StepDownAsync(request.Generation!.Value, cancellationToken).ConfigureAwait(false);
        if (stepped)
        {
            Log($"namespace '{handoff.Name}': generation {request.Generation} stepped down (stopped with no successor)");
        }

        RefreshWatches(handoff);
        return new AgentResponse(true) { Result = stepped };
    }

    private async Task<AgentResponse> LeaveAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        var id = request.Generation ?? 0;
        var state = handoff.Store.ReadUnlocked();
        if (state?.Find(id) is null)
        {
            // Gone already (a retry, or the agent repaired it): nothing to do.
            return new AgentResponse(true) { Result = state is null };
        }

        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var last = await handoff.LeaveAsync(id, cancellationToken).ConfigureAwait(false);
        _watcher.Forget(handoff.Name, id);
        Log($"namespace '{handoff.Name}': generation {id} left{(last ? "; it was the last: table and state removed" : string.Empty)}");
        return new AgentResponse(true) { Result = last };
    }

    private async Task<AgentResponse> FlowsAsync(Handoff handoff, AgentPeer peer, AgentRequest request, CancellationToken cancellationToken)
    {
        if (Mine(handoff, peer, request) is { } refusal)
        {
            return refusal;
        }

        var record = handoff.Store.ReadUnlocked()!.Find(request.Generation!.Value)!;
        var flows = await ConntrackClient.Create(_settings.ConntrackPath).CountAsync(record, cancellationToken).ConfigureAwait(false);
        return new AgentResponse(true) { Flows = flows };
    }

    /// <summary>The generation the peer's process registered, if it did (a retried register finds it here).</summary>
    private static GenerationRecord? Own(Handoff handoff, AgentPeer peer) =>
        handoff.Store.ReadUnlocked()?.Generations.FirstOrDefault(g => g.Process == peer.Process);

    /// <summary>Null when the request's generation is the peer's own process, else the refusal.</summary>
    private static AgentResponse? Mine(Handoff handoff, AgentPeer peer, AgentRequest request)
    {
        if (request.Generation is not { } id)
        {
            return AgentResponse.Fail(AgentErrors.BadRequest, $"'{request.Op}' needs a generation id.");
        }

        var record = handoff.Store.ReadUnlocked()?.Find(id);
        if (record is null)
        {
            return AgentResponse.Fail(AgentErrors.Failed,
                $"Generation {id} is not in namespace '{handoff.Name}' (it left, or it was found dead and removed).");
        }

        return record.Process == peer.Process
            ? null
            : AgentResponse.Fail(AgentErrors.Refused,
                $"generation {id} of namespace '{handoff.Name}' is pid {record.Pid}, not {peer}; a generation acts only for itself.");
    }

    private void Watch(NamespaceName name, GenerationRecord generation)
    {
        switch (_watcher.Watch(name, generation))
        {
            case WatchResult.Watching:
                Log($"watching generation {generation.Id} (pid {generation.Pid}, {generation.State}) of namespace '{name}'");
                break;
            case WatchResult.Dead:
                _watcher.ReportDead(new GenerationExit(name, generation));
                break;
        }
    }

    private void RefreshWatches(Handoff handoff)
    {
        try
        {
            foreach (var generation in handoff.Store.ReadUnlocked()?.Generations ?? [])
            {
                Watch(handoff.Name, generation);
            }
        }
        catch (StateException e)
        {
            Log($"cannot read the state of namespace '{handoff.Name}': {e.Message}");
        }
    }

    private async Task RescanLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_settings.RescanInterval, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            Rescan(announce: false);
        }
    }

    /// <summary>
    /// Watches every generation recorded under the state root for this agent's network namespace (the state is keyed
    /// by it: NAMESPACE@NETNS); reports the dead ones for repair.
    /// </summary>
    private void Rescan(bool announce)
    {
        IReadOnlyList<(NamespaceName Name, ulong NetworkNamespace)> namespaces;
        try
        {
            namespaces = Directory.Exists(_settings.StateRoot) ? StateStore.List(_settings.StateRoot) : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log($"cannot list {_settings.StateRoot}: {e.Message}");
            return;
        }

        foreach (var (name, networkNamespace) in namespaces.Where(n => n.NetworkNamespace == NetworkNamespaces.Current))
        {
            try
            {
                foreach (var generation in new StateStore(_settings.StateRoot, name, networkNamespace).ReadUnlocked()?.Generations ?? [])
                {
                    if (announce || !_watcher.IsWatched(name, generation.Id))
                    {
                        Watch(name, generation);
                    }
                }
            }
            catch (StateException e)
            {
                if (announce)
                {
                    Log($"namespace '{name}' not watched: {e.Message}");
                }
            }
        }
    }

    private async Task RepairLoopAsync()
    {
        try
        {
            await foreach (var exit in _watcher.Exits.ReadAllAsync(_stopping.Token).ConfigureAwait(false))
            {
                await RepairAsync(exit).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    /// <summary>
    /// A watched generation exited. If it was still in the state (it did not leave), the namespace is put right at
    /// once (Handoff.RepairAsync): it is removed, and when it was the active one, the newest superseded generation still
    /// in its rollback window takes the ports back, or else its rule and guard go with it.
    /// </summary>
    private async Task RepairAsync(GenerationExit exit)
    {
        var stopwatch = Stopwatch.StartNew();
        var handoff = Handoff.Create(_settings.StateRoot, exit.Namespace, TimeSpan.FromSeconds(30), _settings.NftPath);
        try
        {
            var recorded = handoff.Store.ReadUnlocked()?.Find(exit.Generation.Id);
            if (recorded is null || recorded.Process != exit.Generation.Process)
            {
                return;
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            Log($"namespace '{exit.Namespace}': generation {recorded.Id} (pid {recorded.Pid}) died while {recorded.State}; repairing");
            var repair = await handoff.RepairAsync(timeout.Token).ConfigureAwait(false);
            LogRepair(exit.Namespace, repair with { Applied = true }, $"in {stopwatch.Elapsed.TotalMilliseconds:0} ms");
            if (!repair.NamespaceRemoved)
            {
                RefreshWatches(handoff);
            }
        }
#pragma warning disable CA1031 // A failed repair is logged and tried again by the next rescan's view of the dead process.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log($"namespace '{exit.Namespace}': repair after generation {exit.Generation.Id} died failed: {e.Message}");
        }
    }
}
