using System.Globalization;
using Switchover.Migration.Model;
using Switchover.Migration.Plan;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Migration.Remote;

/// <summary>What a command did here and what the peer answered.</summary>
public sealed record BothSides(MigrationOutcome? Local, MigrationAnswer? Peer, PeerConnection Connection);

/// <summary>
/// Drives both sides of a migration from this host: this host's side through <see cref="MigrationHost"/>, the other
/// through <c>switchover migrate ... --json</c> over SSH. Each host journals its own side; this host's journal also
/// records the peer and what it answered. The connection is proven before anything changes, and a setup that fails on
/// either side leaves both hosts as they were.
/// </summary>
public sealed class PeerMigration
{
    private static readonly TimeSpan UndoTimeout = TimeSpan.FromSeconds(60);
    private readonly MigrationHost _host;
    private readonly ICommandRunner _runner;

    internal PeerMigration(MigrationHost host, ICommandRunner runner)
    {
        _host = host;
        _runner = runner;
    }

    public static PeerMigration Create(string stateRoot = StateStore.DefaultRoot) => new(MigrationHost.Create(stateRoot), CommandRunner.Instance);

    /// <summary>
    /// The options of the peer's <c>switchover migrate setup</c>: the other side of the same tunnel (local and remote
    /// swapped; the same key, MTU, link network and encapsulation), and the tuples when the peer is the new host.
    /// </summary>
    internal static List<string> PeerSetupArguments(MigrationSpec spec, bool dryRun)
    {
        var other = Other(spec.Side);
        List<string> arguments =
        [
            "--name", spec.Name.Value, "--side", other.ToString().ToLowerInvariant(), "--tunnel", spec.TunnelDevice,
            "--local", spec.RemoteOuter.ToString(), "--remote", spec.LocalOuter.ToString(),
            "--key", spec.Key!.Value.ToString(CultureInfo.InvariantCulture), "--mtu", spec.Mtu.ToString(CultureInfo.InvariantCulture),
            "--link-network", spec.EffectiveLinkNetwork.ToString(),
        ];
        if (spec.Encapsulation != Gre.TunnelEncapsulation.Gre)
        {
            // Only when not the default, so that a peer from before GRE in UDP still takes a plain-GRE setup, and refuses
            // (unknown option) rather than silently speaking plain GRE to this host's GRE in UDP.
            arguments.AddRange(["--encapsulation", MigrationSpec.EncapsulationName(spec.Encapsulation)]);
        }

        if (other == MigrationSide.New)
        {
            arguments.AddRange(spec.Tuples.SelectMany(t => new[] { "--tuple", t.ToString() }));
        }

        if (dryRun)
        {
            arguments.Add("--dry-run");
        }

        return arguments;
    }

    /// <summary>The peer this host's journal records for the migration, or null (not set up here, or set up without one).</summary>
    public async Task<PeerConnection?> RecordedPeerAsync(NamespaceName name, CancellationToken cancellationToken) =>
        (await _host.ReadAsync(name, cancellationToken).ConfigureAwait(false))?.Peer;

    /// <summary>
    /// Sets up both sides: this host's (<paramref name="spec"/>) and the peer's, the other side of the same tunnel.
    /// The tuples go to the new host; the old host moves them later, one by one, with <c>move</c>.
    /// </summary>
    public async Task<BothSides> SetupAsync(MigrationSpec spec, bool createKernelTunnel, bool dryRun, PeerConnection peer, CancellationToken cancellationToken)
    {
        if (spec.Validate() is { Count: > 0 } specErrors)
        {
            throw new MigrationException(specErrors);
        }

        if (peer.Validate() is { Count: > 0 } peerErrors)
        {
            throw new MigrationException(peerErrors);
        }

        var other = Other(spec.Side);
        var client = new PeerClient(_runner, peer);
        var version = await CheckAsync(client, cancellationToken).ConfigureAwait(false);
        var existed = await _host.ReadAsync(spec.Name, cancellationToken).ConfigureAwait(false) is not null;

        var local = spec.Side == MigrationSide.Old ? spec with { Tuples = [] } : spec;
        local = local with { Control = await ResolveAsync(client, cancellationToken).ConfigureAwait(false) };

        MigrationOutcome outcome;
        try
        {
            outcome = await _host.SetupAsync(local, createKernelTunnel, dryRun, cancellationToken).ConfigureAwait(false);
        }
        catch (MigrationException e)
        {
            throw new MigrationException([$"The setup on this host ({Side(spec.Side)}) failed; nothing was changed on the {Side(other)} ({peer.Address}).", .. e.Problems]);
        }

        if (!dryRun)
        {
            await RecordAsync(spec.Name, peer, Exchange("check: switchover --version", ok: true, [version]), cancellationToken).ConfigureAwait(false);
        }

        var arguments = PeerSetupArguments(spec, dryRun);

        MigrationAnswer? answer = null;
        string failure;
        var partial = false;
        try
        {
            answer = await client.MigrateAsync("setup", arguments, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
            failure = string.Join(" ", answer.Problems);
        }
        catch (PeerException e)
        {
            failure = e.Message;
            partial = SshFailure.MayHaveRun(e.Kind);
        }
        catch (OperationCanceledException)
        {
            failure = "the command was cancelled while the peer was setting up";
            partial = true;
        }

        if (answer is { Ok: true })
        {
            if (!dryRun)
            {
                await RecordAsync(spec.Name, peer, Exchange("setup", ok: true, answer.Describe()), cancellationToken).ConfigureAwait(false);
            }

            return new BothSides(outcome, answer, peer);
        }

        if (dryRun)
        {
            throw new MigrationException([$"The {Side(other)} ({peer.Address}) refused the setup: {failure}"]);
        }

        List<string> problems = [$"The setup on the {Side(other)} ({peer.Address}) failed: {failure}"];
        problems.Add(partial
            ? $"It may have set up part of its side: run 'switchover migrate teardown --name {spec.Name}' there."
            : $"The {Side(other)} undid its own part of the setup.");
        using var undo = new CancellationTokenSource(UndoTimeout);
        if (existed)
        {
            await RecordAsync(spec.Name, peer, Exchange("setup", ok: false, answer?.Describe() ?? [failure]), undo.Token).ConfigureAwait(false);
            problems.Add($"This host's side was set up before this command and is kept; 'switchover migrate teardown --name {spec.Name}' removes it.");
        }
        else
        {
            try
            {
                await _host.TeardownAsync(spec.Name, dryRun: false, undo.Token).ConfigureAwait(false);
                problems.Add($"This host's side ({Side(spec.Side)}) was undone: both hosts are as they were before the setup.");
            }
            catch (MigrationException e)
            {
                problems.Add("Undoing this host's side failed too:");
                problems.AddRange(e.Problems);
            }
        }

        problems.Add("Fix the problem on the peer, then run the same setup again.");
        throw new MigrationException(problems);
    }

    /// <summary>move or return, on the old host over SSH (this is the new host).</summary>
    public async Task<BothSides> SteerAsync(NamespaceName name, SteeredTuple tuple, bool move, bool dryRun, MoveCheck check, TimeSpan wait,
        CancellationToken cancellationToken)
    {
        var peer = await RequirePeerAsync(name, cancellationToken).ConfigureAwait(false);
        var client = new PeerClient(_runner, peer);
        List<string> arguments = ["--name", name.Value, tuple.ToString()];
        if (move)
        {
            arguments.AddRange(["--check", check.ToString()]);
            if (wait > TimeSpan.Zero)
            {
                arguments.AddRange(["--wait", string.Create(CultureInfo.InvariantCulture, $"{Math.Ceiling(wait.TotalSeconds)}s")]);
            }
        }

        if (dryRun)
        {
            arguments.Add("--dry-run");
        }

        var verb = move ? "move" : "return";
        var answer = await AskAsync(client, verb, arguments, wait, cancellationToken).ConfigureAwait(false);
        if (!dryRun)
        {
            await RecordAsync(name, peer, Exchange($"{verb} {tuple}", answer.Ok, answer.Describe()), cancellationToken).ConfigureAwait(false);
        }

        return answer.Ok ? new BothSides(null, answer, peer) : throw PeerRefused(peer, verb, answer);
    }

    /// <summary>Tears down the peer's side, then this host's. A peer that fails keeps this host's side (and so its record of the peer).</summary>
    public async Task<BothSides> TeardownAsync(NamespaceName name, bool dryRun, CancellationToken cancellationToken)
    {
        var peer = await RequirePeerAsync(name, cancellationToken).ConfigureAwait(false);
        List<string> arguments = ["--name", name.Value];
        if (dryRun)
        {
            arguments.Add("--dry-run");
        }

        var answer = await AskAsync(new PeerClient(_runner, peer), "teardown", arguments, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
        if (!answer.Ok)
        {
            await RecordAsync(name, peer, Exchange("teardown", ok: false, answer.Describe()), cancellationToken).ConfigureAwait(false);
            throw new MigrationException([
                .. PeerRefused(peer, "teardown", answer).Problems,
                $"This host's side is kept. Run the teardown again, or 'switchover migrate teardown --name {name} --local-only' to tear down only this host's side.",
            ]);
        }

        var local = await _host.TeardownAsync(name, dryRun, cancellationToken).ConfigureAwait(false);
        return new BothSides(local, answer, peer);
    }

    /// <summary>
    /// Finalizes the new host and tears down the old one. The connection is proven first. On the new host: its own
    /// gate (direct arrivals, or --watch until they come) changes nothing; then the old host's teardown over SSH, while
    /// this host's rules still reach it; then this host's finalize, which the gate has cleared, even when the old host
    /// could not be torn down (the provider routes the IP here: this host must serve it). Run on the old host: the
    /// peer's finalize, then the teardown here.
    /// </summary>
    /// <param name="gate">This host's finalize as a dry run (the watch, or the direct-arrival check): throws when refused.</param>
    /// <param name="retire">This host's finalize for real, once the gate passed.</param>
    /// <param name="finalizeArguments">The finalize options for the peer, when the peer is the new host.</param>
    /// <param name="peerWait">How long the peer's finalize may wait (--watch's timeout).</param>
    public async Task<BothSides> FinalizeAsync(NamespaceName name, Func<MigrationHost, Task<MigrationOutcome>> gate, Func<MigrationHost, Task<MigrationOutcome>> retire,
        IReadOnlyList<string> finalizeArguments, TimeSpan peerWait, bool dryRun, CancellationToken cancellationToken)
    {
        var journal = await _host.ReadAsync(name, cancellationToken).ConfigureAwait(false)
            ?? throw new MigrationException([$"Migration '{name}' is not set up on this host."]);
        var peer = journal.Peer ?? throw new MigrationException([$"Migration '{name}' on this host does not record a peer."]);
        var client = new PeerClient(_runner, peer);
        await CheckAsync(client, cancellationToken).ConfigureAwait(false);
        List<string> teardown = ["--name", name.Value];
        if (dryRun)
        {
            teardown.Add("--dry-run");
        }

        if (journal.Side == MigrationSide.New)
        {
            var cleared = await gate(_host).ConfigureAwait(false);
            string? failure = null;
            MigrationAnswer? answer = null;
            try
            {
                answer = await AskAsync(client, "teardown", teardown, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                if (!answer.Ok)
                {
                    failure = string.Join(" ", answer.Problems);
                }
            }
            catch (MigrationException e)
            {
                failure = string.Join(" ", e.Problems);
            }

            if (dryRun)
            {
                return failure is null ? new BothSides(cleared, answer, peer) : throw new MigrationException([$"The old host would not tear down: {failure}"]);
            }

            var local = await retire(_host).ConfigureAwait(false);
            if (failure is not null)
            {
                throw new MigrationException([
                    "This host finalized: it serves the moved addresses directly.", $"The old host ({peer.Address}) could not be torn down: {failure}",
                    $"Run 'switchover migrate teardown --name {name}' on the old host once it can be reached.",
                ]);
            }

            var seen = cleared.Note?.Split("; ")[0];
            return new BothSides(local with { Note = (seen is { Length: > 0 } ? seen + "; " : string.Empty) + "the moved addresses stay on lo and are served directly" },
                answer, peer);
        }

        List<string> finalize = ["--name", name.Value, .. finalizeArguments];
        if (dryRun)
        {
            finalize.Add("--dry-run");
        }

        var finalized = await AskAsync(client, "finalize", finalize, peerWait, cancellationToken).ConfigureAwait(false);
        if (!dryRun)
        {
            await RecordAsync(name, peer, Exchange("finalize", finalized.Ok, finalized.Describe()), cancellationToken).ConfigureAwait(false);
        }

        if (!finalized.Ok)
        {
            throw PeerRefused(peer, "finalize", finalized);
        }

        var torn = await _host.TeardownAsync(name, dryRun, cancellationToken).ConfigureAwait(false);
        return new BothSides(torn, finalized, peer);
    }

    /// <summary>The peer's own <c>migrate status</c> output (text, or its JSON document).</summary>
    public async Task<(int ExitCode, string Output, string Error)> PeerStatusAsync(PeerConnection peer, NamespaceName name, bool json, string? tunnelSocket,
        CancellationToken cancellationToken)
    {
        List<string> arguments = ["--name", name.Value];
        if (json)
        {
            arguments.Add("--json");
        }

        if (tunnelSocket is not null)
        {
            arguments.AddRange(["--tunnel-socket", tunnelSocket]);
        }

        try
        {
            return await new PeerClient(_runner, peer).MigrateTextAsync("status", arguments, cancellationToken).ConfigureAwait(false);
        }
        catch (PeerException e)
        {
            return (SshFailure.SshExitCode, string.Empty, e.Message);
        }
    }

    private static Task<IReadOnlyList<System.Net.IPEndPoint>> ResolveAsync(PeerClient client, CancellationToken cancellationToken) =>
        BeforeAnyChangeAsync(() => client.ResolveAsync(cancellationToken));

    private static Task<string> CheckAsync(PeerClient client, CancellationToken cancellationToken) =>
        BeforeAnyChangeAsync(() => client.CheckAsync(cancellationToken));

    /// <summary>A call to the peer made before either host changed: its failure says so.</summary>
    private static async Task<T> BeforeAnyChangeAsync<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (PeerException e)
        {
            throw new MigrationException([e.Message, "Nothing was changed on either host."]);
        }
    }

    private static async Task<MigrationAnswer> AskAsync(PeerClient client, string verb, IReadOnlyList<string> arguments, TimeSpan longer,
        CancellationToken cancellationToken)
    {
        try
        {
            return await client.MigrateAsync(verb, arguments, longer, cancellationToken).ConfigureAwait(false);
        }
        catch (PeerException e)
        {
            throw new MigrationException([$"'migrate {verb}' on the peer failed: {e.Message}"]);
        }
    }

    private async Task<PeerConnection> RequirePeerAsync(NamespaceName name, CancellationToken cancellationToken) =>
        await RecordedPeerAsync(name, cancellationToken).ConfigureAwait(false)
            ?? throw new MigrationException([$"Migration '{name}' on this host does not record a peer (it was set up without --peer)."]);

    private Task<bool> RecordAsync(NamespaceName name, PeerConnection peer, PeerExchange exchange, CancellationToken cancellationToken) =>
        _host.RecordPeerAsync(name, recorded => (recorded is null || recorded.Uri != peer.Uri ? peer : recorded with
        {
            IdentityFile = peer.IdentityFile, KnownHostsFile = peer.KnownHostsFile, Command = peer.Command, StateDirectory = peer.StateDirectory, Timeout = peer.Timeout,
        }).WithAnswer(exchange), cancellationToken);

    private static PeerExchange Exchange(string request, bool ok, IReadOnlyList<string> answer) => new(DateTimeOffset.UtcNow, request, ok, answer);

    private static MigrationException PeerRefused(PeerConnection peer, string verb, MigrationAnswer answer) =>
        new([$"'migrate {verb}' on the peer ({peer.Address}) failed:", .. answer.Problems]);

    private static MigrationSide Other(MigrationSide side) => side == MigrationSide.Old ? MigrationSide.New : MigrationSide.Old;

    private static string Side(MigrationSide side) => side == MigrationSide.Old ? "old host" : "new host";
}
