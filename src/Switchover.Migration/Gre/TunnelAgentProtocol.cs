using System.Text.Json;
using System.Text.Json.Serialization;

namespace Switchover.Migration.Gre;

/// <summary>What a tunnel agent reports: its process and each tunnel it hosts.</summary>
public sealed record TunnelAgentStatus(int Pid, uint Uid, IReadOnlyList<TunnelStatus> Tunnels);

/// <summary>One tunnel of an agent. <paramref name="State"/> is "running", or "failed: reason".</summary>
public sealed record TunnelStatus(
    string Name,
    GreDataplaneKind Dataplane,
    string Local,
    string Remote,
    uint? Key,
    int Mtu,
    uint? FirewallMark,
    string? NetworkNamespace,
    string State,
    TunnelCounters Counters,
    TunnelEncapsulation Encapsulation = TunnelEncapsulation.Gre);

/// <summary>
/// The agent's control protocol: one JSON object per line each way, over the agent's Unix socket. A request is
/// <c>{"command":"status"}</c> or <c>{"command":"stop"}</c> (a bare <c>status</c> or <c>stop</c> line works too, for
/// socat); a response is <c>{"ok":true,...}</c> or <c>{"ok":false,"error":"..."}</c>.
/// </summary>
internal static class TunnelAgentProtocol
{
    public const string Status = "status";
    public const string Stop = "stop";

    /// <summary>Longest request line read; anything longer is refused.</summary>
    public const int MaxRequestLength = 4096;

    public static string? ParseCommand(string line)
    {
        var text = line.Trim();
        if (!text.StartsWith('{'))
        {
            return text.Length > 0 ? text : null;
        }

        try
        {
            return JsonSerializer.Deserialize(text, TunnelAgentJson.Default.AgentRequest)?.Command;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public static string Request(string command) => JsonSerializer.Serialize(new AgentRequest(command), TunnelAgentJson.Default.AgentRequest);

    public static string Response(AgentResponse response) => JsonSerializer.Serialize(response, TunnelAgentJson.Default.AgentResponse);

    public static AgentResponse? ParseResponse(string line) => JsonSerializer.Deserialize(line, TunnelAgentJson.Default.AgentResponse);

    /// <summary>A status as one line of JSON (camelCase), as `switchover tunnel status --json` prints it.</summary>
    public static string Serialize(TunnelAgentStatus status) => JsonSerializer.Serialize(status, TunnelAgentJson.Default.TunnelAgentStatus);
}

internal sealed record AgentRequest(string Command);

internal sealed record AgentResponse(bool Ok, string? Error = null, string? Message = null, TunnelAgentStatus? Status = null);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(AgentRequest))]
[JsonSerializable(typeof(AgentResponse))]
[JsonSerializable(typeof(TunnelAgentStatus))]
internal sealed partial class TunnelAgentJson : JsonSerializerContext;
