using System.Text.Json.Serialization;

namespace Switchover.State;

[JsonConverter(typeof(EnumNameConverter<GenerationState>))]
public enum GenerationState
{
    /// <summary>Bound to its private ports, not yet ready; its ports are guarded but no traffic is sent to it.</summary>
    Starting,

    /// <summary>The public ports point at it.</summary>
    Active,

    /// <summary>
    /// Superseded; finishing the connections it has, then exiting. Until <see cref="GenerationRecord.RollbackUntil"/>
    /// it keeps its listeners and may take the public ports back.
    /// </summary>
    Draining,
}

/// <summary>
/// A public endpoint and the private port of one generation that serves it. <paramref name="PublicAddress"/> null:
/// every local address of both families; "0.0.0.0": every local IPv4 address; otherwise only that address.
/// </summary>
public sealed record PortMapping(int PublicPort, int PrivatePort, string? PublicAddress = null)
{
    /// <summary>The public side as a user writes it: "8080", "0.0.0.0:8080", "[::1]:8080".</summary>
    [JsonIgnore]
    public string Public => PublicAddress switch
    {
        null => PublicPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
        var a when a.Contains(':', StringComparison.Ordinal) => $"[{a}]:{PublicPort.ToString(System.Globalization.CultureInfo.InvariantCulture)}",
        var a => $"{a}:{PublicPort.ToString(System.Globalization.CultureInfo.InvariantCulture)}",
    };
}

/// <summary>
/// One running process of the service. <paramref name="Steering"/> defaults to Redirect for state files written
/// before TPROXY existed.
/// </summary>
public sealed record GenerationRecord(
    long Id,
    int Pid,
    ulong StartTime,
    GenerationState State,
    DateTimeOffset StartedAt,
    IReadOnlyList<PortMapping> Ports,
    Steering Steering = Steering.Redirect)
{
    [JsonIgnore]
    public ProcessIdentity Process => new(Pid, StartTime);

    /// <summary>
    /// How long this generation, once superseded, keeps its listeners and watches its successor (its own
    /// Switchover:RollbackWindow; zero: it drains at once and is never rolled back to).
    /// </summary>
    public TimeSpan RollbackWindow { get; init; }

    /// <summary>
    /// Set when a successor takes over from it: until then it still holds its listeners and may be made active again
    /// (<see cref="Handoff.RollbackAsync(long, CancellationToken)"/>). Null: not a rollback target (active, starting,
    /// out of its window, or the generation a rollback went away from).
    /// </summary>
    public DateTimeOffset? RollbackUntil { get; init; }

    /// <summary>
    /// Why the last attempt to tell this generation to drain (SIGTERM) failed, with the time; null once one got
    /// through. A draining generation that never heard it keeps serving its open connections: status shows this.
    /// </summary>
    public string? SignalError { get; init; }

    /// <summary>
    /// The signal that tells this generation it was superseded. Generations that keep serving through their rollback
    /// window ask for SIGUSR2 and then stop themselves; absent (records written before the window existed): SIGTERM.
    /// </summary>
    public int? SupersededSignal { get; init; }

    /// <summary>The signal to send this generation when another takes the public ports from it.</summary>
    [JsonIgnore]
    public int DrainSignal => SupersededSignal ?? 15;

    /// <summary>True while this superseded generation still holds its listeners and may take the public ports back.</summary>
    public bool CanRollBackTo(DateTimeOffset now) => State == GenerationState.Draining && RollbackUntil > now;
}

/// <summary>The contents of /run/switchover/NAMESPACE/state.json.</summary>
public sealed record NamespaceState(int Version, string Namespace, long LastGenerationId, IReadOnlyList<GenerationRecord> Generations)
{
    /// <summary>
    /// Set before an nft transaction starts and cleared when the state that matches it is written: when it is found set,
    /// a transaction was interrupted (nft or its caller killed) and the kernel may hold either table, so the next
    /// operation applies the table rendered from this state before anything else.
    /// </summary>
    public bool TransactionPending { get; init; }

    public const int CurrentVersion = 1;

    public static NamespaceState Empty(NamespaceName name) => new(CurrentVersion, name.Value, 0, []);

    /// <summary>The generation the public ports point at, if any.</summary>
    [JsonIgnore]
    public GenerationRecord? Active => Newest(GenerationState.Active);

    /// <summary>The newest generation in <paramref name="state"/>, if any.</summary>
    /// <remarks>A loop, not LINQ's MaxBy: that is JIT-compiled over <c>long</c> in every generation at its launch.</remarks>
    public GenerationRecord? Newest(GenerationState state, long newerThan = long.MinValue)
    {
        GenerationRecord? newest = null;
        foreach (var generation in Generations)
        {
            if (generation.State == state && generation.Id > newerThan && (newest is null || generation.Id > newest.Id))
            {
                newest = generation;
            }
        }

        return newest;
    }

    public GenerationRecord? Find(long id) => Generations.FirstOrDefault(g => g.Id == id);

    public NamespaceState With(GenerationRecord generation) =>
        this with { Generations = [.. Generations.Where(g => g.Id != generation.Id), generation] };

    public NamespaceState Without(long id) => this with { Generations = [.. Generations.Where(g => g.Id != id)] };

    /// <summary>Drops generations whose process is gone (or whose pid now belongs to another process).</summary>
    public NamespaceState WithoutDead(Func<ProcessIdentity, bool> isAlive, out IReadOnlyList<GenerationRecord> removed)
    {
        removed = [.. Generations.Where(g => !isAlive(g.Process))];
        return removed.Count == 0 ? this : this with { Generations = [.. Generations.Where(g => isAlive(g.Process))] };
    }
}
