using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Switchover.Cli;

// The document 'switchover deploy --json' prints, on one line. Scripts parse it: add members, never rename or remove
// them, and bump Version when a change is not additive.

/// <summary>How a deploy ended. Each value but <see cref="TookOver"/> has its own exit code (<see cref="DeployReport.ExitCodeOf"/>).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<DeployResult>))]
internal enum DeployResult
{
    [JsonStringEnumMemberName("tookOver")]
    TookOver,

    [JsonStringEnumMemberName("unhealthy")]
    Unhealthy,

    [JsonStringEnumMemberName("crashed")]
    Crashed,

    [JsonStringEnumMemberName("lockTimeout")]
    LockTimeout,

    [JsonStringEnumMemberName("superseded")]
    Superseded,

    [JsonStringEnumMemberName("startFailed")]
    StartFailed,

    [JsonStringEnumMemberName("timedOut")]
    TimedOut,
}

/// <summary>The generation that still serves a namespace after a deploy that failed.</summary>
internal sealed record ServingGeneration(long GenerationId, int Pid);

/// <summary>What <c>switchover deploy</c> found out about the generation it launched.</summary>
/// <param name="Pid">The launched process; null when it could not be started.</param>
/// <param name="LaunchToServingMs">As the generation measured it, from its process start to its takeover.</param>
/// <param name="DeployMs">From deploy launching the command to deploy knowing the result.</param>
/// <param name="ChildExitCode">The generation's exit status when it has exited (128 + N when signal N ended it).</param>
/// <param name="ChildSignal">The signal that ended it, when the exit status says so.</param>
/// <param name="Serving">Who serves the namespace now, when the deploy failed and the state says.</param>
/// <param name="LogLines">The generation's last log lines, oldest first (empty on success).</param>
internal sealed record DeployReport(
    DeployResult Result,
    int ExitCode,
    string? Namespace,
    long? GenerationId,
    int? Pid,
    double? LaunchToServingMs,
    double DeployMs,
    string? Reason,
    int? ChildExitCode,
    int? ChildSignal,
    ServingGeneration? Serving,
    IReadOnlyList<string> LogLines,
    IReadOnlyList<string> Warnings)
{
    public int Version { get; init; } = 1;

    public static int ExitCodeOf(DeployResult result) => result switch
    {
        DeployResult.TookOver => ExitCodes.Success,
        DeployResult.Unhealthy => ExitCodes.DeployUnhealthy,
        DeployResult.Crashed => ExitCodes.DeployCrashed,
        DeployResult.LockTimeout => ExitCodes.DeployLockTimeout,
        DeployResult.Superseded => ExitCodes.DeploySuperseded,
        DeployResult.StartFailed => ExitCodes.DeployStartFailed,
        DeployResult.TimedOut => ExitCodes.DeployTimedOut,
        _ => ExitCodes.Failure,
    };

    /// <summary>"exited with code 3", "was killed by signal 9 (SIGKILL)": .NET reports a signal N as exit status 128 + N.</summary>
    public static string DescribeExit(int exitCode) => SignalOf(exitCode) is { } signal
        ? string.Create(CultureInfo.InvariantCulture, $"was killed by signal {signal} ({SignalName(signal)}; exit status {exitCode})")
        : string.Create(CultureInfo.InvariantCulture, $"exited with code {exitCode}");

    public static int? SignalOf(int exitCode) => exitCode is > 128 and <= 128 + 64 ? exitCode - 128 : null;

    private static string SignalName(int signal) => signal switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal " + signal.ToString(CultureInfo.InvariantCulture),
    };

    private string Generation => (GenerationId, Pid) switch
    {
        ({ } id, { } pid) => string.Create(CultureInfo.InvariantCulture, $"generation {id} (pid {pid})"),
        (null, { } pid) => string.Create(CultureInfo.InvariantCulture, $"the new generation (pid {pid})"),
        _ => "the new generation",
    };

    private string OfNamespace => Namespace is null ? string.Empty : $" of namespace '{Namespace}'";

    /// <summary>The result for a person: one line on success (standard output); on failure the reason, who still serves and the log lines (standard error).</summary>
    public string Render()
    {
        var text = new StringBuilder();
        foreach (var warning in Warnings)
        {
            text.Append("switchover: warning: ").AppendLine(warning);
        }

        if (Result == DeployResult.TookOver)
        {
            text.Append(CultureInfo.InvariantCulture, $"{Generation}{OfNamespace} took over");
            text.AppendLine(LaunchToServingMs is { } ms ? string.Create(CultureInfo.InvariantCulture, $": launch to serving {ms:0} ms") : string.Empty);
            return text.ToString();
        }

        text.Append(CultureInfo.InvariantCulture, $"switchover: {Generation}{OfNamespace} did not take over: {Label(Result)}: {Reason}");
        text.AppendLine();
        text.AppendLine(Serving is { } serving
            ? string.Create(CultureInfo.InvariantCulture, $"switchover: generation {serving.GenerationId} (pid {serving.Pid}) keeps serving.")
            : Namespace is null
                ? "switchover: the namespace is not known (the generation did not say; pass --namespace), so deploy cannot tell which generation serves; it changed nothing there."
                : $"switchover: no generation of namespace '{Namespace}' is active.");
        if (LogLines.Count > 0)
        {
            text.AppendLine("switchover: its last log lines:");
            foreach (var line in LogLines)
            {
                foreach (var part in line.Split('\n'))
                {
                    text.Append("  ").AppendLine(part.TrimEnd('\r'));
                }
            }
        }

        return text.ToString();
    }

    public static string Label(DeployResult result) => result switch
    {
        DeployResult.TookOver => "took over",
        DeployResult.Unhealthy => "unhealthy",
        DeployResult.Crashed => "crashed",
        DeployResult.LockTimeout => "lock timeout",
        DeployResult.Superseded => "superseded",
        DeployResult.StartFailed => "start failure",
        DeployResult.TimedOut => "timed out",
        _ => result.ToString(),
    };
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(DeployReport))]
internal sealed partial class DeployJsonContext : JsonSerializerContext;

/// <summary>Writes the document that <c>switchover deploy --json</c> prints: one line, because the generation's own log lines share the stream.</summary>
internal static class DeployJson
{
    private static readonly JsonTypeInfo<DeployReport> TypeInfo = (JsonTypeInfo<DeployReport>)new JsonSerializerOptions(DeployJsonContext.Default.Options)
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    }.GetTypeInfo(typeof(DeployReport));

    public static string Serialize(DeployReport report) => JsonSerializer.Serialize(report, TypeInfo);
}
