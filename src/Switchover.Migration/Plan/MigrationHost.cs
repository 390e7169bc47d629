using System.Globalization;
using Switchover.Migration.Gre;
using Switchover.Migration.Model;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Migration.Plan;

/// <summary>When <c>finalize --watch</c> takes the provider's route as moved: direct arrivals and a quiet tunnel, within a timeout.</summary>
public sealed record FinalizeWatch(long DirectPackets, TimeSpan Quiet, TimeSpan Timeout);

/// <summary>What a command did or would do: the changes, in order.</summary>
public sealed record MigrationOutcome(IReadOnlyList<HostChange> Changes, bool DryRun, string? Note = null);

/// <summary>
/// Applies a migration to the host this process runs on, keeps the journal of what it changed, and undoes it.
/// Every command takes the migration's lock, so two commands on one migration never interleave.
/// </summary>
public sealed class MigrationHost
{
    /// <summary>Migrations keep their journals apart from hosting namespaces ('.' is not a namespace character).</summary>
    public const string Directory = ".migrations";

    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(30);
    private readonly ICommandRunner _runner;
    private readonly string _stateRoot;

    internal MigrationHost(ICommandRunner runner, string stateRoot)
    {
        _runner = runner;
        _stateRoot = Path.Combine(stateRoot, Directory);
    }

    public static MigrationHost Create(string stateRoot = StateStore.DefaultRoot) => new(CommandRunner.Instance, stateRoot);

    /// <summary>Sets up this host's side (idempotent). Validates everything first; on a failure midway, undoes what it did.</summary>
    public async Task<MigrationOutcome> SetupAsync(MigrationSpec spec, bool createKernelTunnel, bool dryRun, CancellationToken cancellationToken)
    {
        if (spec.Validate() is { Count: > 0 } specErrors)
        {
            throw new MigrationException(specErrors);
        }

        using var host = await LockHostAsync(cancellationToken).ConfigureAwait(false);
        using var held = await Store(spec.Name).LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        var journal = held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal);
        var facts = await ReadFactsAsync(spec, cancellationToken).ConfigureAwait(false);
        var others = OtherJournals(spec.Name);
        spec = journal is null ? MigrationPlanner.PickFree(spec, facts, others) : spec with
        {
            Mark = spec.Mark == MigrationSpec.PickFree ? journal.Mark : spec.Mark,
            RouteTable = spec.RouteTable == MigrationSpec.PickFree ? journal.RouteTable : spec.RouteTable,
        };
        if (journal is not null && journal.ToSpec().Settings != spec.Settings)
        {
            throw new MigrationException([$"Migration '{spec.Name}' is set up on this host as '{journal.ToSpec().Settings}', not '{spec.Settings}'. " +
                $"Run 'switchover migrate teardown --name {spec.Name}' first to change its settings."]);
        }

        var errors = MigrationPlanner.ValidateOnHost(spec, facts, others.SelectMany(o => o.ToSpec().Tuples));
        if (journal is null)
        {
            errors = [.. errors, .. MigrationPlanner.ValidateResources(spec, facts, others)];
        }
        var withoutKernelTunnel = "This kernel has no GRE module: start the userspace tunnel first";
        if (!facts.TunnelDeviceExists && !createKernelTunnel)
        {
            // Kernel GRE is the default where the kernel has it; detected now, in a throwaway namespace.
            var support = await GreSupport.DetectAsync(cancellationToken).ConfigureAwait(false);
            createKernelTunnel = support.DataplaneFor(spec.LocalOuter.AddressFamily, spec.Encapsulation) == GreDataplaneKind.Kernel;
            withoutKernelTunnel = support.DataplaneFor(spec.LocalOuter.AddressFamily) == GreDataplaneKind.Kernel
                ? "This kernel's GRE has no FOU for --encapsulation udp: load it (modprobe fou) and run the setup again, or start the userspace tunnel first"
                : withoutKernelTunnel;
        }

        // A kernel link this setup creates, or one the operator made (e.g. `switchover tunnel run --dataplane auto`).
        if (facts.TunnelDeviceExists ? facts.TunnelDeviceKind is "ip6gre" : createKernelTunnel)
        {
            errors = [.. errors, .. MigrationPlanner.ValidateKernelTunnel(spec)];
        }

        if (!facts.TunnelDeviceExists && createKernelTunnel && spec.Encapsulation == TunnelEncapsulation.GreInUdp)
        {
            // GRE in UDP on the kernel's GRE needs its FOU, and the host's FOU port: refused now, before anything changes,
            // rather than at `ip fou add`. Read only here, so that a userspace tunnel never loads the fou module.
            facts = await facts.WithFouAsync(_runner, spec.HasIPv6Outer, cancellationToken).ConfigureAwait(false);
            errors = [.. errors, .. MigrationPlanner.ValidateFou(spec, facts)];
        }

        if (!facts.TunnelDeviceExists && !createKernelTunnel)
        {
            errors = [.. errors, $"There is no tunnel device '{spec.TunnelDevice}'. {withoutKernelTunnel} " +
                $"(switchover tunnel run --name {spec.TunnelDevice} --local {spec.LocalOuter} --remote {spec.RemoteOuter} --key K --mtu {spec.Mtu}{spec.TunnelRunEncapsulation}, e.g. as a systemd service)."];
        }

        if (errors.Count > 0)
        {
            if (journal is null)
            {
                held.DeleteNamespace();
            }

            throw new MigrationException(errors);
        }

        var plan = MigrationPlanner.Plan(spec, facts, createKernelTunnel && !facts.TunnelDeviceExists, others);
        if (dryRun)
        {
            if (journal is null)
            {
                held.DeleteNamespace();
            }

            return new MigrationOutcome(plan, DryRun: true);
        }

        var applied = new List<HostChange>(journal?.Applied ?? []);
        var appliedNow = new List<HostChange>();
        var tuples = (journal?.ToSpec().Tuples ?? []).Union(spec.Tuples).ToList();
        try
        {
            foreach (var change in plan)
            {
                await RunAsync(change.Apply, cancellationToken).ConfigureAwait(false);
                appliedNow.Add(change);
                applied.Add(change);
                held.WriteJson(MigrationJournal.FileName, MigrationJournal.From(spec with { Tuples = tuples }, applied) with { Peer = journal?.Peer },
                    MigrationJsonContext.Default.MigrationJournal);
            }
        }
        catch (Exception e) when (e is CommandException or StateException)
        {
            using var rollback = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var undoErrors = await UndoAsync(appliedNow, OtherJournals(spec.Name), rollback.Token).ConfigureAwait(false);
            var remaining = applied.Except(appliedNow).ToList();
            if (remaining.Count == 0)
            {
                held.DeleteNamespace();
            }
            else
            {
                held.WriteJson(MigrationJournal.FileName, MigrationJournal.From(journal!.ToSpec(), remaining) with { Peer = journal.Peer }, MigrationJsonContext.Default.MigrationJournal);
            }

            throw new MigrationException([$"Setup failed and was undone: {e.Message}", .. undoErrors]);
        }

        var added = new List<HostChange>();
        if (journal is not null && spec.Side == MigrationSide.Old)
        {
            var steering = new SteeringTable(spec.Name.Value, OldSide: true, spec.TunnelDevice, spec.Mark, tuples, spec.MovedAddresses);
            foreach (var tuple in spec.Tuples.Except(journal.ToSpec().Tuples))
            {
                var move = MoveChange(steering, tuple, move: true);
                await RunAsync(move.Apply, cancellationToken).ConfigureAwait(false);
                added.Add(move);
            }
        }

        held.WriteJson(MigrationJournal.FileName, MigrationJournal.From(spec with { Tuples = tuples }, applied) with { Peer = journal?.Peer },
            MigrationJsonContext.Default.MigrationJournal);
        return new MigrationOutcome([.. plan, .. added], DryRun: false, plan.Count + added.Count == 0 ? "already set up: nothing to change" : null);
    }

    /// <summary>Moves a tuple (old host): new flows for it go into the tunnel; flows already open stay here.</summary>
    /// <param name="check">What the new host must answer through the tunnel first (not run on a dry run).</param>
    /// <param name="wait">How long to keep checking; zero checks once.</param>
    public async Task<MigrationOutcome> MoveAsync(NamespaceName name, SteeredTuple tuple, bool dryRun, MoveCheck check, TimeSpan wait, CancellationToken cancellationToken)
    {
        if (check.Refusal(tuple) is { } refusal)
        {
            throw new MigrationException([refusal]);
        }

        // Checked before the lock is taken: waiting for the new host must not hold up status or return.
        var journal = await ReadAsync(name, cancellationToken).ConfigureAwait(false);
        if (!dryRun && journal is { Side: MigrationSide.Old } && !journal.ToSpec().Tuples.Contains(tuple))
        {
            var reason = await check.WaitAsync(tuple, journal.Mark, wait, cancellationToken).ConfigureAwait(false);
            if (reason is not null)
            {
                throw new MigrationException([$"Not moving {tuple}: the new host does not serve it through the tunnel ({reason}). " +
                    $"Start the service on the new host (listening on {tuple.Address}:{tuple.Port}), then move again; --wait DURATION waits for it, " +
                    "--check none skips the check."]);
            }
        }

        var outcome = await ChangeTuplesAsync(name, tuple, move: true, dryRun, cancellationToken).ConfigureAwait(false);
        return dryRun && outcome.Changes.Count > 0 ? outcome with { Note = $"the move would first check the new host: {check}" } : outcome;
    }

    /// <summary>Returns a tuple (old host): new flows stay here again (rollback); moved flows finish on the new host.</summary>
    public Task<MigrationOutcome> ReturnAsync(NamespaceName name, SteeredTuple tuple, bool dryRun, CancellationToken cancellationToken) =>
        ChangeTuplesAsync(name, tuple, move: false, dryRun, cancellationToken);

    /// <summary>Undoes everything the migration changed on this host, in reverse order, and forgets it.</summary>
    public async Task<MigrationOutcome> TeardownAsync(NamespaceName name, bool dryRun, CancellationToken cancellationToken)
    {
        using var host = await LockHostAsync(cancellationToken).ConfigureAwait(false);
        using var held = await Store(name).LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        var journal = held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal);
        if (journal is null)
        {
            if (!dryRun)
            {
                held.DeleteNamespace();
            }

            return new MigrationOutcome([], dryRun, $"migration '{name}' is not set up on this host: nothing to tear down");
        }

        var others = OtherJournals(name);
        var undo = journal.Applied.Reverse().Select(c => MigrationPlanner.ForUndo(c, others)).ToList();
        if (dryRun)
        {
            return new MigrationOutcome(undo, DryRun: true);
        }

        var errors = await UndoAsync(journal.Applied, others, cancellationToken).ConfigureAwait(false);
        if (errors.Count > 0)
        {
            throw new MigrationException(["Teardown could not undo everything; the journal is kept so that it can be run again.", .. errors]);
        }

        held.DeleteNamespace();
        return new MigrationOutcome(undo, DryRun: false);
    }

    /// <summary>The live status, or null when the migration is not set up here.</summary>
    /// <param name="tunnelSocket">The userspace tunnel agent's socket, for its counters; null for the default path of the migration's device.</param>
    public async Task<MigrationStatus?> StatusAsync(NamespaceName name, string? tunnelSocket, CancellationToken cancellationToken)
    {
        var journal = await ReadAsync(name, cancellationToken).ConfigureAwait(false);
        return journal is null ? null : await new MigrationStatusReader(_runner).ReadAsync(journal, cancellationToken, tunnelSocket).ConfigureAwait(false);
    }

    /// <summary>
    /// Watches this (new) host until the provider routes the moved addresses here: at least
    /// <see cref="FinalizeWatch.DirectPackets"/> packets arrived directly and none through the tunnel for
    /// <see cref="FinalizeWatch.Quiet"/>; then finalizes. Refuses after <see cref="FinalizeWatch.Timeout"/>.
    /// </summary>
    public async Task<MigrationOutcome> FinalizeWhenRoutedHereAsync(NamespaceName name, FinalizeWatch watch, bool dryRun, CancellationToken cancellationToken)
    {
        var journal = await ReadAsync(name, cancellationToken).ConfigureAwait(false)
            ?? throw new MigrationException([$"Migration '{name}' is not set up on this host."]);
        if (journal.Side != MigrationSide.New)
        {
            throw new MigrationException(["finalize --watch runs on the new host, which sees the provider's route change."]);
        }

        // Only the two counters each poll: the full status (conntrack per tuple, links, rules, the agent) is not needed.
        var reader = new MigrationStatusReader(_runner);
        var spec = journal.ToSpec();
        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        long? tunnelled = null;
        var tunnelledChanged = TimeSpan.Zero;
        while (true)
        {
            var arrivals = await reader.ReadArrivalsAsync(spec, cancellationToken).ConfigureAwait(false);
            if (arrivals.Tunnelled != tunnelled)
            {
                tunnelled = arrivals.Tunnelled;
                tunnelledChanged = elapsed.Elapsed;
            }

            var quiet = elapsed.Elapsed - tunnelledChanged;
            if (arrivals.Direct >= watch.DirectPackets && quiet >= watch.Quiet)
            {
                var outcome = await FinalizeAsync(name, force: false, dryRun, cancellationToken).ConfigureAwait(false);
                var seen = string.Create(CultureInfo.InvariantCulture,
                    $"{arrivals.Direct} packets arrived directly and none through the tunnel for {quiet.TotalSeconds:0.#} s");
                return outcome with { Note = $"{seen}; {outcome.Note}" };
            }

            if (elapsed.Elapsed >= watch.Timeout)
            {
                throw new MigrationException([string.Create(CultureInfo.InvariantCulture,
                    $"The provider did not route the moved addresses here within {watch.Timeout.TotalSeconds:0} s: {arrivals.Direct ?? 0} packets arrived directly " +
                    $"(needed {watch.DirectPackets}), the last through the tunnel {quiet.TotalSeconds:0.#} s ago (needed {watch.Quiet.TotalSeconds:0.#} s). Nothing was changed.")]);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(250), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The new host serves the moved addresses directly (the provider routes them here now): retire the tunnel's part
    /// of this host's side, keep the addresses. Refuses unless packets arrived directly, or when forced.
    /// </summary>
    public async Task<MigrationOutcome> FinalizeAsync(NamespaceName name, bool force, bool dryRun, CancellationToken cancellationToken)
    {
        using var host = await LockHostAsync(cancellationToken).ConfigureAwait(false);
        using var held = await Store(name).LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        var journal = held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal)
            ?? throw new MigrationException([$"Migration '{name}' is not set up on this host."]);
        if (journal.Side != MigrationSide.New)
        {
            throw new MigrationException(["finalize runs on the new host. On the old host, run 'switchover migrate teardown' once the new host has finalized."]);
        }

        var status = await new MigrationStatusReader(_runner).ReadAsync(journal, cancellationToken).ConfigureAwait(false);
        if (status.DirectPackets is not > 0 && !force)
        {
            throw new MigrationException([$"No packet for the moved addresses has arrived here directly yet: the provider still routes them to the old host. " +
                "Finalize after the IP has been moved (or pass --force)."]);
        }

        // Everything but the moved addresses on lo: they stay, and are no longer the migration's to remove.
        var others = OtherJournals(name);
        var retire = journal.Applied.Where(c => !c.Id.StartsWith("addr:lo:", StringComparison.Ordinal)).Select(c => MigrationPlanner.ForUndo(c, others)).ToList();
        if (dryRun)
        {
            return new MigrationOutcome([.. Enumerable.Reverse(retire)], DryRun: true);
        }

        var errors = await UndoAsync(retire, others, cancellationToken).ConfigureAwait(false);
        if (errors.Count > 0)
        {
            throw new MigrationException(["Finalize could not undo everything; the journal is kept.", .. errors]);
        }

        held.DeleteNamespace();
        return new MigrationOutcome([.. Enumerable.Reverse(retire)], DryRun: false,
            $"the moved addresses stay on lo and are served directly; tear down the old host's side with 'switchover migrate teardown --name {name}'");
    }

    /// <summary>Records how this host reaches the peer, and what it answered, in the migration's journal here.</summary>
    /// <returns>False when the migration is not set up here (nothing to record it in).</returns>
    public async Task<bool> RecordPeerAsync(NamespaceName name, Func<Remote.PeerConnection?, Remote.PeerConnection?> update, CancellationToken cancellationToken)
    {
        var store = Store(name);
        if (!store.Exists)
        {
            return false;
        }

        using var held = await store.LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        if (held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal) is not { } journal)
        {
            return false;
        }

        held.WriteJson(MigrationJournal.FileName, journal with { Peer = update(journal.Peer) }, MigrationJsonContext.Default.MigrationJournal);
        return true;
    }

    public async Task<MigrationJournal?> ReadAsync(NamespaceName name, CancellationToken cancellationToken)
    {
        var store = Store(name);
        if (!store.Exists)
        {
            return null;
        }

        using var held = await store.LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        return held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal);
    }

    private async Task<MigrationOutcome> ChangeTuplesAsync(NamespaceName name, SteeredTuple tuple, bool move, bool dryRun, CancellationToken cancellationToken)
    {
        using var held = await Store(name).LockAsync(LockTimeout, cancellationToken).ConfigureAwait(false);
        var journal = held.ReadJson(MigrationJournal.FileName, MigrationJsonContext.Default.MigrationJournal)
            ?? throw new MigrationException([$"Migration '{name}' is not set up on this host. Run 'switchover migrate setup' first."]);
        var spec = journal.ToSpec();
        if (spec.Side != MigrationSide.Old)
        {
            throw new MigrationException([$"Tuples are moved and returned on the old host; this host is the new side of '{name}'."]);
        }

        var moved = spec.Tuples.Contains(tuple);
        if (move == moved)
        {
            return new MigrationOutcome([], dryRun, move ? $"{tuple} is already moved" : $"{tuple} is not moved");
        }

        var tuples = move ? [.. spec.Tuples, tuple] : spec.Tuples.Where(t => t != tuple).ToList();
        if (move)
        {
            var facts = await ReadFactsAsync(spec, cancellationToken).ConfigureAwait(false);
            var errors = MigrationPlanner.ValidateOnHost(spec with { Tuples = tuples }, facts, OtherJournals(name).SelectMany(o => o.ToSpec().Tuples));
            if (errors.Count > 0)
            {
                throw new MigrationException(errors);
            }
        }

        var steering = new SteeringTable(name.Value, OldSide: true, spec.TunnelDevice, spec.Mark, spec.Tuples, spec.MovedAddresses);
        var change = MoveChange(steering, tuple, move);
        if (!dryRun)
        {
            await RunAsync(change.Apply, cancellationToken).ConfigureAwait(false);
            held.WriteJson(MigrationJournal.FileName, journal with { Tuples = tuples.Select(t => t.ToString()).ToList() }, MigrationJsonContext.Default.MigrationJournal);
        }

        return new MigrationOutcome([change], dryRun);
    }

    private static HostChange MoveChange(SteeringTable steering, SteeredTuple tuple, bool move) =>
        new($"tuple:{tuple}", move ? $"move {tuple}: its new flows go to the new host" : $"return {tuple}: its new flows stay here",
            [new HostCommand(["nft", "-f", "-"], move ? steering.RenderMove(tuple) : steering.RenderReturn(tuple))], []);

    /// <summary>
    /// The host's migration lock, one per network namespace beside the migrations' directories: setup, teardown and
    /// finalize of every migration take it before their own. Each reads the host (free marks, route tables and link
    /// networks, the FOU port, the local table's rule, sysctls, the other journals) and then changes it: interleaved,
    /// two setups picked the same mark and table, or one's undo took back a value the other had come to rely on.
    /// </summary>
    private async Task<HostLock> LockHostAsync(CancellationToken cancellationToken)
    {
        var path = Path.Combine(_stateRoot, string.Create(CultureInfo.InvariantCulture, $".host@{NetworkNamespaces.Current}.lock"));
        var handle = await StateStore.LockFileAsync(path, CreateRoot, static () => { }, "give --state-dir a directory this user can write", LockTimeout,
            () => new MigrationException([$"Timed out after {LockTimeout.TotalSeconds:0} s waiting for {path}: another migration's setup, " +
                "teardown or finalize is running on this host. Retry when it has finished."]),
            cancellationToken).ConfigureAwait(false);
        return new HostLock(_stateRoot, path, handle);
    }

    private void CreateRoot()
    {
        try
        {
            System.IO.Directory.CreateDirectory(_stateRoot);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new MigrationException([$"Cannot create the migrations' directory {_stateRoot}: {e.Message}. Run as root, or give --state-dir a directory this user can write."]);
        }
    }

    private sealed class HostLock(string root, string path, Microsoft.Win32.SafeHandles.SafeFileHandle handle) : IDisposable
    {
        public void Dispose()
        {
            // The last migration of this network namespace takes the lock file with it (whoever waits for it takes a lock
            // on the file the path names next), and the directory when no other network namespace's migration is there.
            try
            {
                if (!StateStore.List(root).Any(e => e.NetworkNamespace == NetworkNamespaces.Current))
                {
                    File.Delete(path);
                    System.IO.Directory.Delete(root);
                }
            }
            catch (IOException)
            {
                // Another network namespace's migrations (or lock) remain.
            }
            finally
            {
                handle.Dispose();
            }
        }
    }

    private async Task<HostFacts> ReadFactsAsync(MigrationSpec spec, CancellationToken cancellationToken)
    {
        var probe = await HostFacts.ReadAsync(_runner, spec.TunnelDevice, spec.RemoteOuter, [], cancellationToken).ConfigureAwait(false);
        return await HostFacts.ReadAsync(_runner, spec.TunnelDevice, spec.RemoteOuter, MigrationPlanner.SysctlKeys(spec, probe.Uplink), cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>The journals of the other migrations on this host.</summary>
    private List<MigrationJournal> OtherJournals(NamespaceName name)
    {
        if (!System.IO.Directory.Exists(_stateRoot))
        {
            return [];
        }

        // Each migration's directory is NAME@NETNS; only those of this network namespace (this host) count.
        var journals = new List<MigrationJournal>();
        foreach (var (other, _) in StateStore.List(_stateRoot).Where(e => e.NetworkNamespace == NetworkNamespaces.Current && e.Name != name))
        {
            var store = Store(other);
            if (store.ReadJson(Path.Combine(store.Directory, MigrationJournal.FileName), MigrationJsonContext.Default.MigrationJournal) is { } journal)
            {
                journals.Add(journal);
            }
        }

        return journals;
    }

    private async Task RunAsync(IEnumerable<HostCommand> commands, CancellationToken cancellationToken)
    {
        foreach (var command in commands)
        {
            await _runner.RunAsync(new Command(command.Arguments[0], command.Arguments.Skip(1).ToList()) { StandardInput = command.Input }, cancellationToken)
                .ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Undoes changes in reverse order; keeps going past a failure and reports every one. What the other migrations
    /// on this host still use (a shared FOU port) is kept.
    /// </summary>
    private async Task<IReadOnlyList<string>> UndoAsync(IEnumerable<HostChange> changes, IReadOnlyList<MigrationJournal> others, CancellationToken cancellationToken)
    {
        var errors = new List<string>();
        foreach (var change in changes.Reverse().Select(c => MigrationPlanner.ForUndo(c, others)))
        {
            try
            {
                await RunAsync(change.Undo, cancellationToken).ConfigureAwait(false);
            }
            catch (CommandException e)
            {
                errors.Add(string.Create(CultureInfo.InvariantCulture, $"undo of '{change.Description}' failed: {e.Message}"));
            }
        }

        return errors;
    }

    private StateStore Store(NamespaceName name) =>
        new(_stateRoot, name, $"run 'switchover migrate teardown --name {name.Value}' or remove {Path.Combine(_stateRoot, name.Value)}");
}

/// <summary>A migration command was refused or failed. Every problem is listed; the message says what to do.</summary>
public sealed class MigrationException(IReadOnlyList<string> problems) : Exception(string.Join(Environment.NewLine, problems))
{
    public IReadOnlyList<string> Problems { get; } = problems;
}
