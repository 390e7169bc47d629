using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Switchover.Cli;

// The document 'switchover status --json' prints. Scripts parse it: add members, never rename or remove them,
// and bump Version when a change is not additive.

/// <summary>Everything status found. <see cref="Errors"/> is empty exactly when the exit code is 0.</summary>
internal sealed record StatusReport(
    int Version,
    string StateDirectory,
    IReadOnlyList<NamespaceStatus> Namespaces,
    IReadOnlyList<StatusError> Errors)
{
    public const int CurrentVersion = 1;
}

/// <summary>One namespace whose state was read.</summary>
/// <param name="TablePresent">Whether the nft table exists; null when nft could not tell (see the report's errors).</param>
/// <param name="ActiveGeneration">The generation the public ports point at, if any.</param>
internal sealed record NamespaceStatus(
    string Name,
    string StateDirectory,
    string Table,
    bool? TablePresent,
    long? ActiveGeneration,
    IReadOnlyList<PublicEndpointStatus> PublicEndpoints,
    IReadOnlyList<GenerationStatus> Generations);

/// <summary>A public endpoint and the private port of the active generation it is redirected to.</summary>
internal sealed record PublicEndpointStatus(string Endpoint, int Port, int PrivatePort, long Generation);

/// <summary>One generation as the state file records it, with what is true of it now.</summary>
/// <param name="State">The recorded state, or <see cref="GenerationStatusKind.Dead"/> when its process is gone (a stale entry).</param>
/// <param name="RecordedState">The state as the state file records it.</param>
internal sealed record GenerationStatus(
    long Id,
    int Pid,
    GenerationStatusKind State,
    GenerationStatusKind RecordedState,
    DateTimeOffset StartedAt,
    long AgeSeconds,
    IReadOnlyList<PortStatus> Ports)
{
    /// <summary>Until when this superseded generation may still take the public ports back; null when it may not.</summary>
    public DateTimeOffset? RollbackUntil { get; init; }

    /// <summary>Why telling this generation that it was superseded failed (it then keeps serving its open connections); null when it heard.</summary>
    public string? SignalError { get; init; }
}

/// <param name="Connections">Conntrack's TCP flows to the private port; null for a dead generation or when conntrack failed.</param>
internal sealed record PortStatus(int PublicPort, int PrivatePort, ConnectionCounts? Connections);

internal sealed record ConnectionCounts(int Established, int HalfOpen, int Closing, int Total);

/// <summary>A problem status found. <see cref="Namespace"/> is null when it is not about one namespace.</summary>
internal sealed record StatusError(string? Namespace, string Message);

[JsonConverter(typeof(JsonStringEnumConverter<GenerationStatusKind>))]
internal enum GenerationStatusKind
{
    [JsonStringEnumMemberName("starting")]
    Starting,

    [JsonStringEnumMemberName("active")]
    Active,

    [JsonStringEnumMemberName("draining")]
    Draining,

    /// <summary>The state file lists it, but its process is gone (or its pid now belongs to another process).</summary>
    [JsonStringEnumMemberName("dead")]
    Dead,
}

[JsonSourceGenerationOptions(
    WriteIndented = true,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(StatusReport))]
[JsonSerializable(typeof(Switchover.Migration.Plan.MigrationStatus))]
internal sealed partial class StatusJsonContext : JsonSerializerContext;

/// <summary>Writes the document that <c>switchover status --json</c> prints.</summary>
internal static class StatusJson
{
    // The document goes to a terminal or a pipe, never into HTML: keep ' and non-ASCII characters readable.
    private static readonly JsonTypeInfo<StatusReport> TypeInfo = (JsonTypeInfo<StatusReport>)new JsonSerializerOptions(StatusJsonContext.Default.Options)
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    }.GetTypeInfo(typeof(StatusReport));

    public static string Serialize(StatusReport report) => JsonSerializer.Serialize(report, TypeInfo);
}
