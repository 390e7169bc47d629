using System.Globalization;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Switchover.Agent;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Who carries out this generation's handoff: <see cref="Handoff"/> in this process (root or CAP_NET_ADMIN), or the
/// Switchover agent on its behalf (no privileges). The operations, and the exceptions they throw, are the same.
/// </summary>
internal interface IHandoffBackend : IFlowCounter
{
    /// <summary>"in this process", or "through the agent at PATH", for the logs.</summary>
    string Description { get; }

    /// <summary>Checks, changing nothing, that the handoff can run: nft may change the ruleset, conntrack runs.</summary>
    Task CheckAsync(CancellationToken cancellationToken);

    Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, TimeSpan rollbackWindow,
        CancellationToken cancellationToken);

    Task<TakeoverResult> TakeOverAsync(long id, CancellationToken cancellationToken, Action<TakeoverResult, NamespaceState>? committed = null);

    Task<SignalFailure?> SignalToDrainAsync(long id, CancellationToken cancellationToken);

    Task<RollbackResult> RollbackAsync(long previousId, bool force, long? from, CancellationToken cancellationToken);

    Task<RepairResult> RepairAsync(CancellationToken cancellationToken);

    Task<GenerationState?> EndRollbackWindowAsync(long id, CancellationToken cancellationToken);

    Task<bool> StepDownAsync(long id, CancellationToken cancellationToken);

    Task<bool> LeaveAsync(long id, CancellationToken cancellationToken);
}

/// <summary>The handoff in this process, as before the agent existed.</summary>
internal sealed class LocalHandoffBackend(Handoff handoff, ConntrackClient conntrack) : IHandoffBackend
{
    public string Description => "in this process";

    public async Task CheckAsync(CancellationToken cancellationToken)
    {
        await handoff.CheckAsync(cancellationToken).ConfigureAwait(false);
        await conntrack.CheckAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, TimeSpan rollbackWindow,
        CancellationToken cancellationToken) =>
        handoff.RegisterAsync(process, ports, steering, rollbackWindow, cancellationToken);

    public Task<TakeoverResult> TakeOverAsync(long id, CancellationToken cancellationToken, Action<TakeoverResult, NamespaceState>? committed = null) =>
        handoff.TakeOverAsync(id, cancellationToken, committed);

    public Task<SignalFailure?> SignalToDrainAsync(long id, CancellationToken cancellationToken) => handoff.SignalToDrainAsync(id, cancellationToken);

    public Task<RollbackResult> RollbackAsync(long previousId, bool force, long? from, CancellationToken cancellationToken) =>
        handoff.RollbackAsync(previousId, force, from, cancellationToken);

    public Task<RepairResult> RepairAsync(CancellationToken cancellationToken) => handoff.RepairAsync(cancellationToken);

    public Task<GenerationState?> EndRollbackWindowAsync(long id, CancellationToken cancellationToken) => handoff.EndRollbackWindowAsync(id, cancellationToken);

    public Task<bool> StepDownAsync(long id, CancellationToken cancellationToken) => handoff.StepDownAsync(id, cancellationToken);

    public Task<bool> LeaveAsync(long id, CancellationToken cancellationToken) => handoff.LeaveAsync(id, cancellationToken);

    public Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken) => conntrack.CountAsync(generation, cancellationToken);

    public Task<int> CountHalfOpenAsync(GenerationRecord generation, CancellationToken cancellationToken) =>
        conntrack.CountHalfOpenAsync(generation, cancellationToken);
}

/// <summary>The handoff carried out by the Switchover agent, for a process without privileges.</summary>
internal sealed class AgentHandoffBackend(AgentClient client, NamespaceName name, TimeSpan lockTimeout, string? stateDirectory = null) : IHandoffBackend
{
    public string Description => $"through the agent at {client.SocketPath}";

    /// <summary>Also checks that the agent keeps the state where this process reads it (for systemd's notifications).</summary>
    public async Task CheckAsync(CancellationToken cancellationToken)
    {
        var answer = await client.SendAsync(Request(AgentOperations.Check), cancellationToken).ConfigureAwait(false);
        if (stateDirectory is not null && answer.StateDirectory is { } agents
            && !string.Equals(Path.TrimEndingDirectorySeparator(agents), Path.TrimEndingDirectorySeparator(stateDirectory), StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"The Switchover agent at {client.SocketPath} keeps the state under {agents}, but Switchover:StateDirectory is {stateDirectory}. " +
                "Set them alike (the agent's --state-dir, the app's Switchover:StateDirectory); nothing was changed.");
        }
    }

    public async Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, TimeSpan rollbackWindow,
        CancellationToken cancellationToken)
    {
        // The agent registers the process the kernel says is at the other end of the connection: this one.
        var response = await client.SendAsync(Request(AgentOperations.Register) with
        {
            Ports = ports,
            Steering = steering,
            RollbackWindowMs = (long)rollbackWindow.TotalMilliseconds,
        }, cancellationToken).ConfigureAwait(false);
        return new Registration(Required(response.Generation), response.StaleRemoved ?? []);
    }

    public async Task<TakeoverResult> TakeOverAsync(long id, CancellationToken cancellationToken, Action<TakeoverResult, NamespaceState>? committed = null)
    {
        TakeoverResult? result = null;
        var final = await client.SendAsync(Request(AgentOperations.TakeOver) with { Generation = id }, cancellationToken, committed: response =>
        {
            result = new TakeoverResult(Required(response.Generation), response.Previous ?? [], response.StaleRemoved ?? [], response.Ruleset ?? string.Empty,
                TimeSpan.FromMilliseconds(response.TransactionMs ?? 0));
            if (response.State is { } state)
            {
                committed?.Invoke(result, state);
            }
        }).ConfigureAwait(false);
        var taken = result ?? throw new InvalidOperationException("The Switchover agent answered the takeover without committing it.");
        if (final.Phase != "committed")
        {
            return taken with { SignalFailures = final.SignalFailures ?? [] };
        }

        // The agent died between the commit and its last answer, perhaps before it signalled the previous generations
        // (nothing else would ever tell them). The next agent tells them; a second signal changes nothing for one that
        // heard the first. The takeover stands whatever happens: what cannot be told now is a signal failure, retried.
        var failures = new List<SignalFailure>();
        foreach (var previous in taken.Previous)
        {
            try
            {
                if (await SignalToDrainAsync(previous.Id, CancellationToken.None).ConfigureAwait(false) is { } failure)
                {
                    failures.Add(failure);
                }
            }
            catch (InvalidOperationException e)
            {
                failures.Add(new SignalFailure(previous, 0, $"The Switchover agent went away after the takeover, before it told generation {previous.Id} to drain: {e.Message}"));
            }
        }

        return taken with { SignalFailures = failures };
    }

    public async Task<SignalFailure?> SignalToDrainAsync(long id, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.SignalToDrain) with { Generation = id }, cancellationToken).ConfigureAwait(false)).SignalFailure;

    public async Task<RollbackResult> RollbackAsync(long previousId, bool force, long? from, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.Rollback) with { Generation = previousId, Force = force, From = from }, cancellationToken)
            .ConfigureAwait(false)).Rollback ?? throw new InvalidOperationException("The Switchover agent answered the rollback without its result.");

    public async Task<RepairResult> RepairAsync(CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.Repair), cancellationToken).ConfigureAwait(false)).Repair
        ?? throw new InvalidOperationException("The Switchover agent answered the repair without its result.");

    public async Task<GenerationState?> EndRollbackWindowAsync(long id, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.EndRollbackWindow) with { Generation = id }, cancellationToken).ConfigureAwait(false)).GenerationState;

    public async Task<bool> StepDownAsync(long id, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.StepDown) with { Generation = id }, cancellationToken).ConfigureAwait(false)).Result ?? false;

    public async Task<bool> LeaveAsync(long id, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.Leave) with { Generation = id }, cancellationToken).ConfigureAwait(false)).Result ?? false;

    public async Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken) =>
        (await client.SendAsync(Request(AgentOperations.Flows) with { Generation = generation.Id }, cancellationToken).ConfigureAwait(false)).Flows
        ?? new FlowCounts(0, 0, 0);

    // The agent counts with a filtered dump per call; the lookup-only polls of ConntrackClient stay in-process for now.
    public async Task<int> CountHalfOpenAsync(GenerationRecord generation, CancellationToken cancellationToken) =>
        (await CountAsync(generation, cancellationToken).ConfigureAwait(false)).HalfOpen;

    /// <summary>Has the agent mark a private listener IP_TRANSPARENT (which needs CAP_NET_ADMIN), sending it the socket.</summary>
    public void MakeTransparent(Socket socket) =>
        client.Send(Request(AgentOperations.Transparent), CancellationToken.None, socket.SafeHandle);

    private AgentRequest Request(string op) => new(op) { Namespace = name.Value, LockTimeoutMs = (long)lockTimeout.TotalMilliseconds };

    private static GenerationRecord Required(GenerationRecord? generation) =>
        generation ?? throw new InvalidOperationException("The Switchover agent's answer names no generation.");
}

/// <summary>
/// Decides, once per process, who carries out the handoff (<c>Switchover:Agent</c>): <c>auto</c> (the default) uses
/// the agent at /run/switchover/agent.sock when this process lacks CAP_NET_ADMIN and that socket exists, and the
/// handoff in this process otherwise (root apps work as they always did); <c>off</c> never uses an agent; a path always
/// uses the agent there.
/// </summary>
internal sealed class HandoffBackends
{
    public const string Auto = "auto";
    public const string Off = "off";

    // <linux/capability.h>
    private const int CapNetAdmin = 12;

    private readonly SwitchoverConfiguration _configuration;
    private readonly Lazy<string?> _agentSocket;
    private readonly Lazy<NamespaceName> _namespace;

    public HandoffBackends(SwitchoverConfiguration configuration, IHostEnvironment environment)
    {
        _configuration = configuration;
        var options = configuration.Options;
        _agentSocket = new Lazy<string?>(() => Choose(options.Agent, HasCapability(CapNetAdmin), File.Exists));
        _namespace = new Lazy<NamespaceName>(() => options.Namespace is { } ns ? NamespaceName.Parse(ns) : NamespaceName.FromApplicationName(environment.ApplicationName));
    }

    /// <summary>The agent's socket, or null when the handoff runs in this process.</summary>
    public string? AgentSocket => _agentSocket.Value;

    public IHandoffBackend Create(NamespaceName name)
    {
        var options = _configuration.Options;
        return AgentSocket is { } socket
            ? new AgentHandoffBackend(new AgentClient(socket, options.AgentReconnectTimeout), name, options.LockTimeout, options.StateDirectory)
            : new LocalHandoffBackend(Handoff.Create(options.StateDirectory, name, options.LockTimeout, options.NftPath),
                ConntrackClient.Create(options.ConntrackPath));
    }

    /// <summary>Marks a private listener IP_TRANSPARENT: itself when it may, through the agent otherwise.</summary>
    public void MakeTransparent(Socket socket)
    {
        if (AgentSocket is null)
        {
            TransparentSockets.MakeTransparent(socket);
            return;
        }

        try
        {
            ((AgentHandoffBackend)Create(_namespace.Value)).MakeTransparent(socket);
        }
        catch (Exception e) when (e is AgentRefusedException or AgentUnavailableException or InvalidOperationException)
        {
            socket.Dispose();
            throw new IOException($"Could not mark the private listener IP_TRANSPARENT through the agent: {e.Message}", e);
        }
    }

    // internal for testing
    internal static string? Choose(string setting, bool privileged, Func<string, bool> exists) => setting switch
    {
        Off => null,
        Auto => !privileged && exists(HandoffAgent.DefaultSocketPath) ? HandoffAgent.DefaultSocketPath : null,
        var path => path,
    };

    /// <summary>Whether this process has a capability in its effective set (CapEff in /proc/self/status).</summary>
    internal static bool HasCapability(int capability)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                {
                    var mask = ulong.Parse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    return (mask & (1UL << capability)) != 0;
                }
            }
        }
        catch (IOException)
        {
            // No procfs: assume privileged, which is what the handoff in this process needs to be anyway.
        }

        return true;
    }
}
