using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Switchover.Cli.Doctor;

// The document 'switchover doctor --json' prints. Scripts parse it: add members, never rename or remove them, and
// bump Version when a change is not additive.

[JsonConverter(typeof(JsonStringEnumConverter<Severity>))]
internal enum Severity
{
    /// <summary>Checked, and fine.</summary>
    [JsonStringEnumMemberName("ok")]
    Ok,

    /// <summary>Worth knowing, nothing to do.</summary>
    [JsonStringEnumMemberName("info")]
    Info,

    /// <summary>May bite, or doctor could not check it: read the line.</summary>
    [JsonStringEnumMemberName("warning")]
    Warning,

    /// <summary>Something will not work: traffic dropped or captured, a feature or privilege missing.</summary>
    [JsonStringEnumMemberName("problem")]
    Problem,
}

/// <summary>One line of doctor's report.</summary>
/// <param name="Check">Which check: privileges, tool, kernel, kernel-feature, ipv6, ruleset, firewall, port,
/// private-ports, capture, notrack, prerouting-drop, docker-nat-priority, iptables-legacy, steering, namespace, namespace-table.</param>
/// <param name="Subject">What it is about within the check: a port ("tcp/8080"), a firewall ("ufw"), a module ("nft_tproxy"); null for one-line checks.</param>
/// <param name="Advice">What to do about it; null when nothing is to be done.</param>
internal sealed record Finding(string Check, string? Subject, Severity Severity, string Message, string? Advice = null);

internal sealed record DoctorCounts(int Ok, int Info, int Warning, int Problem);

/// <summary>Everything doctor found.</summary>
/// <param name="Steering">"tproxy" or "redirect": the steering the checks assumed.</param>
/// <param name="SteeringSource">"option" (--steering), "table" (what the namespace's table does) or "default".</param>
internal sealed record DoctorReport(
    int Version,
    string? Namespace,
    IReadOnlyList<int> Ports,
    string Steering,
    string SteeringSource,
    IReadOnlyList<Finding> Findings)
{
    public const int CurrentVersion = 1;

    public DoctorCounts Counts => new(
        Findings.Count(f => f.Severity == Severity.Ok),
        Findings.Count(f => f.Severity == Severity.Info),
        Findings.Count(f => f.Severity == Severity.Warning),
        Findings.Count(f => f.Severity == Severity.Problem));

    /// <summary>0 when nothing is to be done, <see cref="ExitCodes.Failure"/> for problems, <see cref="ExitCodes.Warnings"/> for warnings only.</summary>
    public int ExitCode =>
        Findings.Any(f => f.Severity == Severity.Problem) ? ExitCodes.Failure
        : Findings.Any(f => f.Severity == Severity.Warning) ? ExitCodes.Warnings
        : ExitCodes.Success;
}

/// <summary>The human form: one line per finding, the advice on the same line, and a count at the end.</summary>
internal static class DoctorText
{
    public static string Render(DoctorReport report)
    {
        var sb = new StringBuilder();
        foreach (var f in report.Findings)
        {
            var label = f.Severity switch
            {
                Severity.Ok => "ok",
                Severity.Info => "info",
                Severity.Warning => "warning",
                _ => "problem",
            };
            sb.Append(label.PadRight(8)).Append(f.Check);
            if (f.Subject is not null)
            {
                sb.Append(' ').Append(f.Subject);
            }

            sb.Append(": ").Append(ToolErrors.OneLine(f.Message));
            if (f.Advice is not null)
            {
                sb.Append(" -> ").Append(ToolErrors.OneLine(f.Advice));
            }

            sb.Append('\n');
        }

        var c = report.Counts;
        sb.Append(System.Globalization.CultureInfo.InvariantCulture,
            $"{c.Problem} problem(s), {c.Warning} warning(s), {c.Info} info, {c.Ok} ok\n");
        return sb.ToString();
    }
}

[JsonSourceGenerationOptions(
    WriteIndented = true,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(DoctorReport))]
internal sealed partial class DoctorJsonContext : JsonSerializerContext;

internal static class DoctorJson
{
    private static readonly JsonTypeInfo<DoctorReport> TypeInfo = (JsonTypeInfo<DoctorReport>)new JsonSerializerOptions(DoctorJsonContext.Default.Options)
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    }.GetTypeInfo(typeof(DoctorReport));

    public static string Serialize(DoctorReport report) => JsonSerializer.Serialize(report, TypeInfo);
}
