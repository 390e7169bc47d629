using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Agent;

/// <summary>What a client asks the agent. One request per connection (a takeover adds one acknowledgement).</summary>
public static class AgentOperations
{
    /// <summary>Checks that the agent answers, that it may change the ruleset, and that the peer may use the namespace.</summary>
    public const string Check = "check";

    /// <summary>Marks the listener sent with the request IP_TRANSPARENT (SCM_RIGHTS), after checking what it is.</summary>
    public const string Transparent = "transparent";

    public const string Register = "register";
    public const string TakeOver = "takeOver";
    public const string StepDown = "stepDown";
    public const string Leave = "leave";

    /// <summary>Removes dead generations and restores the invariant (Handoff.RepairAsync).</summary>
    public const string Repair = "repair";

    /// <summary>The peer's own superseded generation takes the public ports back (Handoff.RollbackAsync).</summary>
    public const string Rollback = "rollback";

    /// <summary>The peer's own generation's rollback window is over (Handoff.EndRollbackWindowAsync).</summary>
    public const string EndRollbackWindow = "endRollbackWindow";

    /// <summary>Tells a draining generation again that it was superseded (Handoff.SignalToDrainAsync).</summary>
    public const string SignalToDrain = "signalToDrain";

    /// <summary>The conntrack flow counts of the peer's own generation (for its drain).</summary>
    public const string Flows = "flows";

    /// <summary>The client's answer to a takeover's "committed" reply: whatever had to hear of it has; signal the previous.</summary>
    public const string Acknowledge = "ack";
}

/// <summary>Why the agent did not do what was asked.</summary>
public static class AgentErrors
{
    /// <summary>The policy does not allow it, or the generation is not the peer's. Nothing was changed.</summary>
    public const string Refused = "refused";

    /// <summary>A newer generation is active (<see cref="AgentResponse.Generation"/> is that one).</summary>
    public const string Superseded = "superseded";

    public const string LockTimeout = "lockTimeout";

    /// <summary>The request was malformed.</summary>
    public const string BadRequest = "badRequest";

    /// <summary>The operation failed (nft, the state file, ...); the message says why.</summary>
    public const string Failed = "failed";
}

public sealed record AgentRequest(string Op)
{
    public string? Namespace { get; init; }

    public long? Generation { get; init; }

    public IReadOnlyList<PortMapping>? Ports { get; init; }

    public Steering? Steering { get; init; }

    /// <summary>Register: the generation's rollback window, in milliseconds.</summary>
    public long? RollbackWindowMs { get; init; }

    /// <summary>Rollback: even though the active generation is alive (it is unhealthy).</summary>
    public bool? Force { get; init; }

    /// <summary>Rollback: only while this generation is the active one.</summary>
    public long? From { get; init; }

    /// <summary>How long the agent may wait for the namespace lock, in milliseconds (capped by the agent).</summary>
    public long? LockTimeoutMs { get; init; }
}

public sealed record AgentResponse(bool Ok)
{
    public string? Error { get; init; }

    public string? Message { get; init; }

    /// <summary>"committed" for the first reply of a takeover (answer with <see cref="AgentOperations.Acknowledge"/>), else null.</summary>
    public string? Phase { get; init; }

    public GenerationRecord? Generation { get; init; }

    public IReadOnlyList<GenerationRecord>? Previous { get; init; }

    public IReadOnlyList<GenerationRecord>? StaleRemoved { get; init; }

    public string? Ruleset { get; init; }

    public double? TransactionMs { get; init; }

    public NamespaceState? State { get; init; }

    /// <summary>StepDown: it was active and stepped down; Leave: it was the last and the namespace was removed.</summary>
    public bool? Result { get; init; }

    public FlowCounts? Flows { get; init; }

    public IReadOnlyList<SignalFailure>? SignalFailures { get; init; }

    public SignalFailure? SignalFailure { get; init; }

    public RepairResult? Repair { get; init; }

    public RollbackResult? Rollback { get; init; }

    /// <summary>EndRollbackWindow: the generation's state now.</summary>
    public GenerationState? GenerationState { get; init; }

    /// <summary>The agent's state root, so that the client reads the same state files.</summary>
    public string? StateDirectory { get; init; }

    public static AgentResponse Fail(string error, string message) => new(false) { Error = error, Message = message };
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(AgentRequest))]
[JsonSerializable(typeof(AgentResponse))]
internal sealed partial class AgentJsonContext : JsonSerializerContext;

/// <summary>The wire format: one JSON document per line, UTF-8.</summary>
internal static class AgentProtocol
{
    /// <summary>A line longer than this is not one of ours.</summary>
    public const int MaxLine = 1 << 20;

    public static byte[] Encode(AgentRequest request) => Line(JsonSerializer.SerializeToUtf8Bytes(request, AgentJsonContext.Default.AgentRequest));

    public static byte[] Encode(AgentResponse response) => Line(JsonSerializer.SerializeToUtf8Bytes(response, AgentJsonContext.Default.AgentResponse));

    public static AgentRequest DecodeRequest(ReadOnlySpan<byte> line) =>
        JsonSerializer.Deserialize(line, AgentJsonContext.Default.AgentRequest) ?? throw new JsonException("null request");

    public static AgentResponse DecodeResponse(ReadOnlySpan<byte> line) =>
        JsonSerializer.Deserialize(line, AgentJsonContext.Default.AgentResponse) ?? throw new JsonException("null response");

    private static byte[] Line(byte[] json)
    {
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        return line;
    }

    public static string Printable(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes[..Math.Min(bytes.Length, 200)]);
}
