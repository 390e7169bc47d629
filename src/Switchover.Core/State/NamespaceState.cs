using System.Text.Json.Serialization;

namespace Switchover.State;

[JsonConverter(typeof(JsonStringEnumConverter<GenerationState>))]
public enum GenerationState
{
    /// <summary>Bound to its private ports, not yet ready; its ports are guarded but no traffic is sent to it.</summary>
    Starting,

    /// <summary>The public ports point at it.</summary>
    Active,

    /// <summary>Superseded; finishing the connections it has, then exiting.</summary>
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
}

/// <summary>The contents of /run/switchover/NAMESPACE/state.json.</summary>
public sealed record NamespaceState(int Version, string Namespace, long LastGenerationId, IReadOnlyList<GenerationRecord> Generations)
{
    public const int CurrentVersion = 1;

    public static NamespaceState Empty(NamespaceName name) => new(CurrentVersion, name.Value, 0, []);

    /// <summary>The generation the public ports point at, if any.</summary>
    [JsonIgnore]
    public GenerationRecord? Active => Generations.Where(g => g.State == GenerationState.Active).MaxBy(g => g.Id);

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

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(NamespaceState))]
internal sealed partial class StateJsonContext : JsonSerializerContext;
