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
    TimeSpan RuleTransaction)
{
    /// <summary>
    /// Previous generations that could not be told to drain. The takeover stands: they are recorded in the state
    /// (<see cref="GenerationRecord.SignalError"/>) and <see cref="Handoff.SignalToDrainAsync"/> retries them.
    /// </summary>
    public IReadOnlyList<SignalFailure> SignalFailures { get; init; } = [];
}

/// <summary>A generation that a signal did not reach, and why (the message says what to do).</summary>
public sealed record SignalFailure(GenerationRecord Generation, int Errno, string Error);

/// <summary>What <see cref="Handoff.RollbackAsync(long, CancellationToken)"/> did.</summary>
public enum RollbackOutcome
{
    /// <summary>The generation asked for holds the public ports again.</summary>
    RolledBack,

    /// <summary>It already held them (a repeated or concurrent rollback): nothing changed.</summary>
    AlreadyActive,

    /// <summary>The active generation is alive (and the rollback was not forced, or it is not the one the caller judged): nothing changed.</summary>
    NotNeeded,

    /// <summary>The generation asked for cannot take the ports back (gone, never served, or past its rollback window): nothing changed.</summary>
    NotPossible,
}

/// <summary>What a rollback did, why, and who holds the public ports now.</summary>
/// <param name="From">The generation the ports were taken from (dead, or alive and now draining), if any.</param>
/// <param name="Ruleset">The ruleset applied, or null when nothing was applied.</param>
public sealed record RollbackResult(
    RollbackOutcome Outcome,
    string Reason,
    GenerationRecord? Active,
    GenerationRecord? From,
    IReadOnlyList<GenerationRecord> StaleRemoved,
    string? Ruleset)
{
    public IReadOnlyList<SignalFailure> SignalFailures { get; init; } = [];
}

/// <summary>What a repair did: dead generations removed, a previous one promoted, or the public ports left unsteered.</summary>
/// <param name="Active">Who holds the public ports after the repair; null when nobody does (they are not steered).</param>
/// <param name="Promoted">A previous generation, still within its rollback window, made active again because the active one died.</param>
/// <param name="Applied">True when a table was applied (or the namespace removed); false when nothing needed doing.</param>
/// <param name="NamespaceRemoved">No generation was left alive: the table and the state directory were removed.</param>
public sealed record RepairResult(
    GenerationRecord? Active,
    GenerationRecord? Promoted,
    IReadOnlyList<GenerationRecord> StaleRemoved,
    bool Applied,
    bool NamespaceRemoved,
    string? Ruleset);

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
    private static readonly TimeSpan RestoreTimeout = TimeSpan.FromSeconds(15);

    private readonly StateStore _store;
    private readonly NftClient _nft;
    private readonly TimeSpan _lockTimeout;
    private readonly Func<ProcessIdentity, bool> _isAlive;
    private readonly Func<ProcessIdentity, int, int> _signal;
    private readonly TimeProvider _time;

    /// <param name="signal">internal for testing: sends a signal, returns 0, ESRCH (gone) or the errno.</param>
    internal Handoff(StateStore store, NftClient nft, TimeSpan lockTimeout, Func<ProcessIdentity, bool>? isAlive = null,
        Func<ProcessIdentity, int, int>? signal = null, TimeProvider? time = null)
    {
        _store = store;
        _nft = nft;
        _lockTimeout = lockTimeout;
        _isAlive = isAlive ?? (p => p.IsAlive());
        _signal = signal ?? ((p, s) => p.TrySignal(s));
        _time = time ?? TimeProvider.System;
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
    /// <remarks>Once superseded, the generation is sent SIGTERM and gets no rollback window.</remarks>
    public Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, CancellationToken cancellationToken) =>
        RegisterAsync(process, ports, steering, TimeSpan.Zero, null, cancellationToken);

    /// <summary>
    /// Records a generation that, once superseded, is told so by SIGUSR2 (not SIGTERM): it keeps serving while it
    /// watches its successor for <paramref name="rollbackWindow"/>, drains, and then stops itself (HandoffService).
    /// </summary>
    /// <param name="rollbackWindow">How long this generation, once superseded, keeps its listeners to take the ports back (zero: never).</param>
    public Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, TimeSpan rollbackWindow,
        CancellationToken cancellationToken) =>
        RegisterAsync(process, ports, steering, rollbackWindow, Libc.SIGUSR2, cancellationToken);

    /// <exception cref="InvalidOperationException">A live generation of the namespace could not be signalled by this process (another user's).</exception>
    private async Task<Registration> RegisterAsync(ProcessIdentity process, IReadOnlyList<PortMapping> ports, Steering steering, TimeSpan rollbackWindow,
        int? supersededSignal, CancellationToken cancellationToken)
    {
        // The state of network namespaces that are gone would otherwise stay forever (their tables went with them).
        StateStore.RemoveGoneNetworkNamespaces(_store.Root);
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        var state = Reconcile(original, out var stale);

        RefuseLegacyGenerations();

        // This process will have to tell the active generation to drain once it has taken over, when nothing may fail
        // any more: find out now, before anything changed, whether the kernel lets it.
        foreach (var other in state.Generations.Where(g => g.Pid != process.Pid))
        {
            var errno = _signal(other.Process, 0);
            if (errno is not 0 and not Libc.ESRCH)
            {
                throw new InvalidOperationException(
                    $"Generation {other.Id} of namespace '{Name}' ({other.State}) could not be signalled by this process, so this one could not " +
                    $"tell it to drain after taking over; nothing was changed. {other.Process.DescribeSignalFailure(0, errno)}");
            }
        }

        var generation = new GenerationRecord(state.LastGenerationId + 1, process.Pid, process.StartTime, GenerationState.Starting,
            _time.GetUtcNow(), ports, steering)
        {
            RollbackWindow = rollbackWindow,
            SupersededSignal = supersededSignal,
        };
        await CommitAsync(held, original, state.With(generation) with { LastGenerationId = generation.Id }, cancellationToken)
            .ConfigureAwait(false);
        return new Registration(generation, stale);
    }

    /// <summary>
    /// Points the public ports at <paramref name="id"/> in one transaction, marks the previous active generations
    /// Draining and tells them so (SIGUSR2, or SIGTERM for generations without a rollback window; after the lock is released).
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
            var state = Reconcile(original, out var stale);
            var self = state.Find(id) ?? throw new InvalidOperationException(
                $"Generation {id} is no longer in {_store.StatePath} (was the namespace cleaned up?); it cannot take over.");
            var newer = state.Newest(GenerationState.Active, newerThan: id);
            if (newer is not null)
            {
                throw new SupersededException(newer);
            }

            var now = _time.GetUtcNow();
            var previous = state.Generations.Where(g => g.Id != id && g.State == GenerationState.Active).ToList();
            if (previous.Count > 0)
            {
                TestPause.At(TestPause.TakeoverBegun);
            }

            // A repeated takeover: the agent's client asks again when the agent died after the commit but before its
            // answer. The state says it all already, but the previous generations may never have been told; they are
            // told (again) below. A second SIGUSR2 or SIGTERM to a generation that already drains changes nothing.
            var repeated = self.State == GenerationState.Active
                ? state.Generations.Where(g => g.Id < id && g.State == GenerationState.Draining).ToList()
                : [];
            foreach (var old in previous)
            {
                state = state.With(old with
                {
                    State = GenerationState.Draining,
                    RollbackUntil = old.RollbackWindow > TimeSpan.Zero ? now + old.RollbackWindow : null,
                });
            }

            self = self with { State = GenerationState.Active, RollbackUntil = null };
            state = state.With(self);
            var (ruleset, elapsed) = await CommitAsync(held, original, state, cancellationToken,
                previous.Count > 0 ? TestPause.TransactionApplied : null).ConfigureAwait(false);
            result = new TakeoverResult(self, [.. previous, .. repeated], stale, ruleset, elapsed);
            written = state;
        }

        if (result.Previous.Count > 0)
        {
            TestPause.At(TestPause.StateWritten);
        }

        // From here on the takeover stands, whatever fails: undoing it would leave the ports to generations already
        // told (in the state) that they are draining.
        // The caller's token is not passed on: once committed, the outcome of the signals is recorded regardless.
        committed?.Invoke(result, written);
        var failures = await SignalAllAsync(result.Previous, CancellationToken.None).ConfigureAwait(false);
        if (result.Previous.Count > 0)
        {
            TestPause.At(TestPause.OldSignalled);
        }

        return result with { SignalFailures = failures };
    }

    /// <summary>
    /// Tells a draining generation (again) that it was superseded, and records the outcome in its <see cref="GenerationRecord.SignalError"/>.
    /// Used to retry after a failed signal; never changes the table.
    /// </summary>
    /// <returns>Null when the signal got through (or the generation is gone or no longer draining), otherwise the failure.</returns>
    public async Task<SignalFailure?> SignalToDrainAsync(long id, CancellationToken cancellationToken)
    {
        var record = _store.ReadUnlocked()?.Find(id);
        if (record is not { State: GenerationState.Draining })
        {
            return null;
        }

        var failures = await SignalAllAsync([record], cancellationToken).ConfigureAwait(false);
        return failures.Count == 0 ? null : failures[0];
    }

    /// <summary>
    /// Gives the public ports back to <paramref name="previousId"/>, a superseded generation still within its rollback
    /// window, when the active generation is dead. Idempotent: a second call finds it active.
    /// </summary>
    public Task<RollbackResult> RollbackAsync(long previousId, CancellationToken cancellationToken) =>
        RollbackAsync(previousId, force: false, from: null, cancellationToken);

    /// <summary>
    /// Gives the public ports back to <paramref name="previousId"/> in one transaction: when the active generation is
    /// dead, or when <paramref name="force"/>d (<c>switchover rollback</c>, or an unhealthy successor) even though it is alive. The
    /// generation it goes away from is marked Draining, is no rollback target itself, and is told to drain.
    /// </summary>
    /// <param name="from">When set, only roll back while this generation is the active one (the one the caller judged).</param>
    public async Task<RollbackResult> RollbackAsync(long previousId, bool force, long? from, CancellationToken cancellationToken)
    {
        RollbackResult result;
        using (var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false))
        {
            var original = held.Read();
            var state = original.WithoutDead(_isAlive, out var stale);
            var active = state.Active;
            var target = state.Find(previousId);
            var now = _time.GetUtcNow();
            string? refusal = target switch
            {
                null => $"generation {previousId} is no longer running",
                { State: GenerationState.Active } => null,
                { State: GenerationState.Starting } => $"generation {previousId} never served (it is still starting)",
                _ when !target.CanRollBackTo(now) => target.RollbackUntil is null
                    ? $"generation {previousId} is not a rollback target (its rollback window is off or over, or the ports were rolled back away from it)"
                    : $"generation {previousId}'s rollback window ended at {target.RollbackUntil:O}; it is closing its listeners",
                _ => null,
            };

            if (refusal is not null)
            {
                result = new RollbackResult(RollbackOutcome.NotPossible, refusal, active, null, stale, await TidyAsync(held, original, state, cancellationToken).ConfigureAwait(false));
            }
            else if (target!.State == GenerationState.Active)
            {
                result = new RollbackResult(RollbackOutcome.AlreadyActive, $"generation {previousId} already holds the public ports", target, null, stale,
                    await TidyAsync(held, original, state, cancellationToken).ConfigureAwait(false));
            }
            else if (active is not null && (!force || (from is { } expected && active.Id != expected)))
            {
                result = new RollbackResult(RollbackOutcome.NotNeeded,
                    $"generation {active.Id} (pid {active.Pid}) is alive and holds the public ports" + (force ? $", not generation {from}" : string.Empty),
                    active, null, stale, await TidyAsync(held, original, state, cancellationToken).ConfigureAwait(false));
            }
            else
            {
                var deadFrom = active is null ? original.Active : null;
                if (active is not null)
                {
                    state = state.With(active with { State = GenerationState.Draining, RollbackUntil = null });
                }

                var revived = target with { State = GenerationState.Active, RollbackUntil = null };
                state = state.With(revived);
                var (ruleset, _) = await CommitAsync(held, original, state, cancellationToken).ConfigureAwait(false);
                result = new RollbackResult(RollbackOutcome.RolledBack,
                    active is not null ? $"rolled back from generation {active.Id} (pid {active.Pid}), which was alive and now drains"
                        : deadFrom is not null ? $"rolled back from generation {deadFrom.Id} (pid {deadFrom.Pid}), which is dead"
                        : "no generation held the public ports",
                    revived, active ?? deadFrom, stale, ruleset);
            }
        }

        if (result is { Outcome: RollbackOutcome.RolledBack, From: { } left } && _isAlive(left.Process))
        {
            result = result with { SignalFailures = await SignalAllAsync([left], CancellationToken.None).ConfigureAwait(false) };
        }

        return result;
    }

    /// <summary>
    /// Brings the namespace back to the invariant after a generation died: removes dead generations, and when no live
    /// generation holds the public ports, gives them to the newest superseded one still within its rollback window,
    /// or else leaves them unsteered (no rule and no guard of a dead generation stays). One transaction. Run before
    /// anything else by whatever acts on a namespace (a generation, the CLI, the agent when a pidfd fires).
    /// </summary>
    public async Task<RepairResult> RepairAsync(CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        var state = original.WithoutDead(_isAlive, out var stale);
        if (state.Generations.Count == 0)
        {
            if (original.Generations.Count > 0 || original.TransactionPending)
            {
                await _nft.DeleteTableAsync(Name, cancellationToken).ConfigureAwait(false);
            }

            held.DeleteNamespace();
            return new RepairResult(null, null, stale, Applied: original.Generations.Count > 0, NamespaceRemoved: true, null);
        }

        state = Reconcile(state, stale, out _, out var promoted);
        var ruleset = await TidyAsync(held, original, state, cancellationToken).ConfigureAwait(false);
        return new RepairResult(state.Active, promoted, stale, ruleset is not null, NamespaceRemoved: false, ruleset);
    }

    /// <summary>
    /// A superseded generation whose rollback window is over, about to close its listeners: from now on nothing may
    /// give the public ports back to it.
    /// </summary>
    /// <returns>
    /// Its state now: <see cref="GenerationState.Active"/> when a rollback made it active again meanwhile (it must go on
    /// serving), otherwise Draining (or null when it is no longer recorded).
    /// </returns>
    public async Task<GenerationState?> EndRollbackWindowAsync(long id, CancellationToken cancellationToken)
    {
        using var held = await _store.LockAsync(_lockTimeout, cancellationToken).ConfigureAwait(false);
        var original = held.Read();
        var self = original.Find(id);
        var state = self is { State: GenerationState.Draining, RollbackUntil: not null } ? original.With(self with { RollbackUntil = null }) : original;
        await TidyAsync(held, original, state, cancellationToken).ConfigureAwait(false);
        return self?.State;
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
            await TidyAsync(held, original, original, cancellationToken).ConfigureAwait(false);
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
        var state = Reconcile(original.Without(id), out _);
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

    /// <summary>
    /// Earlier versions kept the state in STATE_DIR/NAMESPACE (not keyed by network namespace). Their live generations
    /// own the same table, unseen from here: each would rewrite it from its own state. Refuse until they are stopped.
    /// </summary>
    private void RefuseLegacyGenerations()
    {
        var legacy = new StateStore(_store.Root, Name, NetworkNamespaces.Current);
        var path = Path.Combine(_store.Root, Name.Value, "state.json");
        NamespaceState? state;
        try
        {
            state = legacy.ReadJson(path, static bytes => StateJson.DeserializeState(bytes));
        }
        catch (StateException)
        {
            return;
        }

        var live = state?.Generations.Where(g => _isAlive(g.Process)).ToList() ?? [];
        if (live.Count > 0)
        {
            throw new InvalidOperationException(
                $"Generation(s) of namespace '{Name}' recorded by an earlier Switchover version in {path} still run (pid " +
                $"{string.Join(", ", live.Select(g => g.Pid))}); they own the same table and would undo this takeover. Nothing was changed. " +
                "Stop them first (this upgrade is a restart), then deploy again.");
        }
    }

    /// <summary>What every step starts from: the state without dead generations, repaired (see <see cref="RepairAsync"/>).</summary>
    private NamespaceState Reconcile(NamespaceState original, out IReadOnlyList<GenerationRecord> stale) =>
        Reconcile(original.WithoutDead(_isAlive, out stale), stale, out _, out _);

    /// <summary>
    /// Exactly one active generation, alive: extra ones (a state file is only a file) drain; when the active one died
    /// (it is among <paramref name="dead"/>), the newest superseded generation still within its rollback window is
    /// promoted. Not when nobody is active because the active one stepped down: the service was stopped on purpose.
    /// </summary>
    private NamespaceState Reconcile(NamespaceState live, IReadOnlyList<GenerationRecord> dead, out GenerationRecord? active, out GenerationRecord? promoted)
    {
        var state = live;
        var newest = state.Active;
        active = newest;
        promoted = null;
        foreach (var extra in state.Generations.Where(g => g.State == GenerationState.Active && g.Id != newest!.Id))
        {
            state = state.With(extra with { State = GenerationState.Draining, RollbackUntil = null });
        }

        if (active is null && dead.Any(g => g.State == GenerationState.Active))
        {
            var now = _time.GetUtcNow();
            if (state.Generations.Where(g => g.CanRollBackTo(now)).MaxBy(g => g.Id) is { } candidate)
            {
                promoted = candidate with { State = GenerationState.Active, RollbackUntil = null };
                state = state.With(promoted);
                active = promoted;
            }
        }

        return state;
    }

    /// <summary>
    /// Writes <paramref name="after"/> when it differs from <paramref name="before"/> only in what the table does not
    /// show; applies it when the table changes or a transaction was interrupted before. Null when nothing was applied.
    /// </summary>
    private async Task<string?> TidyAsync(StateLock held, NamespaceState before, NamespaceState after, CancellationToken cancellationToken)
    {
        // Rendered text, not the records: they hold lists, which compare by reference.
        if (before.TransactionPending || HandoffTable.FromState(Name, after).Render() != HandoffTable.FromState(Name, before).Render())
        {
            return (await CommitAsync(held, before, after, cancellationToken).ConfigureAwait(false)).Ruleset;
        }

        if (after != before)
        {
            held.Write(after);
        }

        return null;
    }

    /// <summary>What <see cref="CommitAsync"/> applied, and how long the kernel's transaction took.</summary>
    /// <remarks>
    /// A class, not a tuple: <c>Task&lt;T&gt;</c> and its builder and awaiters over a value type are JIT-compiled in every
    /// generation that registers (the framework's image holds them for reference types only), on the launch's critical path.
    /// </remarks>
    private sealed record Committed(string Ruleset, TimeSpan Elapsed);

    /// <param name="pauseAt">Test only: the <see cref="TestPause"/> point right after the kernel committed.</param>
    private async Task<Committed> CommitAsync(StateLock held, NamespaceState before, NamespaceState after, CancellationToken cancellationToken,
        string? pauseAt = null)
    {
        var table = HandoffTable.FromState(Name, after);
        var rendered = table.Render();

        // Write-ahead: if nft, or this process, is killed once the kernel may have committed, the next operation
        // finds the mark and applies the table of the state it reads before anything else. Writing it first also
        // means a state directory that cannot be written fails the step before the kernel changed.
        held.Write(before with { TransactionPending = true });
        var stopwatch = Stopwatch.StartNew();
        try
        {
            await _nft.ApplyAsync(table, cancellationToken).ConfigureAwait(false);
        }
        catch (NftException e) when (e.Command.ExitCode is >= 1 and < 128)
        {
            // nft reported the kernel's answer: the batch was refused as a whole and nothing changed.
            TryWrite(held, before);
            throw;
        }
        catch (Exception e) when (e is NftException or OperationCanceledException)
        {
            // nft was killed (by a signal, or its timeout) or cancelled, perhaps after the kernel committed: put the
            // table of the state that stays back, so kernel and state agree again before the failure is reported.
            await RestoreAsync(held, before).ConfigureAwait(false);
            throw;
        }

        var elapsed = stopwatch.Elapsed;
        if (pauseAt is not null)
        {
            TestPause.At(pauseAt);
        }

        try
        {
            held.Write(after with { TransactionPending = false });
        }
        catch (StateException)
        {
            // Keep rules and state in agreement: put the previous rules back before reporting.
            await RestoreAsync(held, before).ConfigureAwait(false);
            throw;
        }

        return new Committed(rendered, elapsed);
    }

    private static void TryWrite(StateLock held, NamespaceState state)
    {
        try
        {
            held.Write(state with { TransactionPending = false });
        }
        catch (StateException)
        {
            // The mark stays set; the next operation applies the table again, which is harmless.
        }
    }

    /// <summary>Applies the table of <paramref name="before"/> again; clears the pending mark when that worked (best effort).</summary>
    private async Task RestoreAsync(StateLock held, NamespaceState before)
    {
        using var timeout = new CancellationTokenSource(RestoreTimeout);
        try
        {
            if (before.Generations.Count == 0)
            {
                await _nft.DeleteTableAsync(Name, timeout.Token).ConfigureAwait(false);
            }
            else
            {
                await _nft.ApplyAsync(HandoffTable.FromState(Name, before), timeout.Token).ConfigureAwait(false);
            }

            held.Write(before with { TransactionPending = false });
        }
        catch (Exception e) when (e is NftException or StateException or OperationCanceledException)
        {
            // The mark stays set: the next operation applies the state's table before anything else.
        }
    }

    /// <summary>
    /// Signals each generation, outside the namespace lock, and records the outcome in its record: a failure is kept
    /// (status shows it, <see cref="SignalToDrainAsync"/> retries), a success clears an earlier one.
    /// </summary>
    private async Task<IReadOnlyList<SignalFailure>> SignalAllAsync(IReadOnlyList<GenerationRecord> generations, CancellationToken cancellationToken)
    {
        var failures = new List<SignalFailure>();
        var delivered = new List<GenerationRecord>();
        foreach (var generation in generations)
        {
            var signal = generation.DrainSignal;
            var errno = _signal(generation.Process, signal);
            if (errno is 0 or Libc.ESRCH)
            {
                delivered.Add(generation);
            }
            else
            {
                failures.Add(new SignalFailure(generation, errno, generation.Process.DescribeSignalFailure(signal, errno)));
            }
        }

        if (failures.Count == 0 && delivered.All(g => g.SignalError is null))
        {
            return failures;
        }

        // Recording is best effort: the signal outcome is what it is, whether or not the state can say so.
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(RestoreTimeout);
        try
        {
            using var held = await _store.LockAsync(_lockTimeout, timeout.Token).ConfigureAwait(false);
            var original = held.Read();
            var state = original;
            var at = _time.GetUtcNow();
            foreach (var (id, error) in failures.Select(f => (f.Generation.Id, (string?)$"{at:O} {f.Error}"))
                         .Concat(delivered.Select(g => (g.Id, (string?)null))))
            {
                if (state.Find(id) is { } now && now.SignalError != error)
                {
                    state = state.With(now with { SignalError = error });
                }
            }

            await TidyAsync(held, original, state, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is StateException or NftException or OperationCanceledException)
        {
            // The caller logs the failures it gets back.
        }

        return failures;
    }
}
