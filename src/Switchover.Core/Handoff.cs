using System.Diagnostics;
using Switchover.Interop;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover;

/// <summary>What a takeover did: who is active now, who was told to drain, what the rules now say.</summary>
public sealed record TakeoverResult(
    GenerationRecord Generation,
    IReadOnlyList<GenerationRecord> Previous,
    IReadOnlyList<GenerationRecord> StaleRemoved,
    string Ruleset,
    TimeSpan RuleTransaction);

/// <summary>A generation recorded in state Starting, and the generations found dead on the way.</summary>
public sealed record Registration(GenerationRecord Generation, IReadOnlyList<GenerationRecord> StaleRemoved);

/// <summary>A newer generation already holds the public ports; this one must not take them back.</summary>
public sealed class SupersededException(GenerationRecord newer)
    : Exception($"Generation {newer.Id} (pid {newer.Pid}) is newer and already active; this generation steps aside.")
{
    public GenerationRecord Newer { get; } = newer;
}

/// <summary>
/// The handoff protocol of one namespace, shared by the hosting integration and the CLI. Every step is a
/// read-modify-write of the state under the namespace lock; the table is always rendered from the state and
/// applied in one nft transaction before the state is written, so a failure leaves both as they were.
/// </summary>
public sealed class Handoff
{
    private readonly StateStore _store;
    private readonly NftClient _nft;
    private readonly TimeSpan _lockTimeout;
    private readonly Func<ProcessIdentity, bool> _isAlive;

    internal Handoff(StateStore store, NftClient nft, TimeSpan lockTimeout, Func<ProcessIdentity, bool>? isAlive = null)
    {
        _store = store;
        _nft = nft;
        _lockTimeout = lockTimeout;
        _isAlive = isAlive ?? (p => p.IsAlive());
    }

    /// <param name="nftPath">Null: libnftables in this process; a path: that nft program.</param>
    public static Handoff Create(string stateRoot, NamespaceName name, TimeSpan lockTimeout, string? nftPath = null) =>
        new(new StateStore(stateRoot, name), NftClient.Create(nftPath), lockTimeout);

    public NamespaceName Name => _store.Name;

    public StateStore Store => _store;

    /// <summary>Checks, without changing anything, that nft runs and may change the ruleset.</summary>
    public Task CheckAsync(CancellationToken cancellationToken) => _nft.CheckAsync(Name, cancellationToken);

    /// <summary>
    /// Records a new generation in state Starting: its private ports are guarded from then on, but nothing is sent to it.
    /// Generation ids grow monotonically within a namespace.
    /// </summary>
    public Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, CancellationToken cancellationToken) =>
        RegisterAsync(process, ports, Steering.Tproxy, cancellationToken);

    /// <inheritdoc cref="RegisterAsync(ProcessIdentity, IReadOnlyList{PortMapping}, CancellationToken)"/>
    public async Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        var state = original.WithoutDead(_isAlive, out var stale);
        var generation = new GenerationRecord(state.LastGenerationId + 1, process.Pid, process.StartTime, GenerationState.Starting,
            DateTimeOffset.UtcNow, ports, steering);
        await CommitAsync(held, original, state.With(generation) with { LastGenerationId = generation.Id }, cancellationToken)
            .ConfigureAwait(false);
        return new Registration(generation, stale);
    }

    /// <summary>
    /// Points the public ports at <paramref name="id"/> in one transaction, marks the previous active generations
    /// Draining and sends them SIGTERM (after the lock is released).
    /// </summary>
    /// <exception cref="SupersededException">A newer generation is already active.</exception>
    /// <param name="committed">
    /// Called with the result and the state just written, before the previous generations are signalled: whatever must
    /// hear of the takeover before the old generation can exit (systemd's MAINPID) is told here.
    /// </param>
    public async Task<TakeoverResult> TakeOverAsync(long id, CancellationToken cancellationToken, Action<TakeoverResult, NamespaceState>? committed = null)
    {
        TakeoverResult result;
        NamespaceState written;
        using (var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false))
        {
            var original = held.Read();
            var state = original.WithoutDead(_isAlive, out var stale);
            var self = state.Find(id) ?? throw new InvalidOperationException(
                $"Generation {id} is no longer in {_store.StatePath} (was the namespace cleaned up?); it cannot take over.");
            var newer = state.Generations.Where(g => g.Id > id && g.State == GenerationState.Active).MaxBy(g => g.Id);
            if (newer is not null)
            {
                throw new SupersededException(newer);
            }

            var previous = state.Generations.Where(g => g.Id != id && g.State == GenerationState.Active).ToList();
            foreach (var old in previous)
            {
                state = state.With(old with { State = GenerationState.Draining });
            }

            self = self with { State = GenerationState.Active };
            state = state.With(self);
            var (ruleset, elapsed) = await CommitAsync(held, original, state, cancellationToken).ConfigureAwait(false);
            result = new TakeoverResult(self, previous, stale, ruleset, elapsed);
            written = state;
        }

        committed?.Invoke(result, written);
        foreach (var old in result.Previous)
        {
            old.Process.Signal(Libc.SIGTERM);
        }

        return result;
    }

    /// <summary>
    /// A generation that is stopped while still active (no successor): the public ports stop pointing at it, so that
    /// its drain ends; connections to them are refused until the next generation takes over.
    /// </summary>
    /// <returns>True when it was active and stepped down.</returns>
    public async Task<bool> StepDownAsync(long id, CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        if (original.Find(id) is not { State: GenerationState.Active } self)
        {
            return false;
        }

        await CommitAsync(held, original, original.With(self with { State = GenerationState.Draining }), cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Removes a generation that is going away. When no generation is left, the table and the state directory go too.
    /// </summary>
    /// <returns>True when this removed the namespace's table and state.</returns>
    public async Task<bool> LeaveAsync(long id, CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        var state = original.WithoutDead(_isAlive, out _).Without(id);
        if (state.Generations.Count == 0)
        {
            await _nft.DeleteTableAsync(Name, cancellationToken).ConfigureAwait(false);
            held.DeleteNamespace();
            return true;
        }

        await CommitAsync(held, original, state, cancellationToken).ConfigureAwait(false);
        return false;
    }

    /// <summary>Removes the table and the state. Refuses while live generations exist, unless forced.</summary>
    /// <returns>The live generations that were there (and were left running).</returns>
    public async Task<IReadOnlyList<GenerationRecord>> CleanupAsync(bool force, CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        IReadOnlyList<GenerationRecord> live;
        try
        {
            live = held.Read().WithoutDead(_isAlive, out _).Generations;
        }
        catch (StateException) when (force)
        {
            live = [];
        }

        if (live.Count > 0 && !force)
        {
            throw new InvalidOperationException(
                $"Namespace '{Name}' has {live.Count} live generation(s) (pid {string.Join(", ", live.Select(g => g.Pid))}). " +
                "Stop them first (SIGTERM drains them), or pass --force to remove the rules under them.");
        }

        await _nft.DeleteTableAsync(Name, cancellationToken).ConfigureAwait(false);
        held.DeleteNamespace();
        return live;
    }

    private async Task<(string Ruleset, TimeSpan Elapsed)> CommitAsync(StateLock held, NamespaceState before, NamespaceState after, CancellationToken cancellationToken)
    {
        var table = HandoffTable.FromState(Name, after);
        var stopwatch = Stopwatch.StartNew();
        await _nft.ApplyAsync(table, cancellationToken).ConfigureAwait(false);
        var elapsed = stopwatch.Elapsed;
        try
        {
            held.Write(after);
        }
        catch (StateException)
        {
            // Keep rules and state in agreement: put the previous rules back before reporting.
            using var rollback = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            await RestoreAsync(before, rollback.Token).ConfigureAwait(false);
            throw;
        }

        return (table.Render(), elapsed);
    }

    private Task RestoreAsync(NamespaceState before, CancellationToken cancellationToken) =>
        before.Generations.Count == 0
            ? _nft.DeleteTableAsync(Name, cancellationToken)
            : _nft.ApplyAsync(HandoffTable.FromState(Name, before), cancellationToken);
}
