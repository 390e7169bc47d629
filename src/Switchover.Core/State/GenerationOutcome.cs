using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Switchover.State;

/// <summary>Where a generation launched by <c>switchover deploy</c> got to.</summary>
[JsonConverter(typeof(EnumNameConverter<OutcomeKind>))]
public enum OutcomeKind
{
    /// <summary>Not decided yet: the generation is starting (the record then carries its log lines so far).</summary>
    Starting,

    /// <summary>It holds the public ports now.</summary>
    TookOver,

    /// <summary>It did not get ready within Switchover:ReadinessTimeout (health checks or the readiness request failed).</summary>
    Unhealthy,

    /// <summary>It waited longer than Switchover:LockTimeout for the namespace lock.</summary>
    LockTimeout,

    /// <summary>A newer generation took over first, so this one stepped aside.</summary>
    Superseded,

    /// <summary>It could not start as a generation: invalid configuration, an endpoint that cannot move, nft missing, ...</summary>
    StartFailed,

    /// <summary>It was told to stop (SIGTERM) before it took over.</summary>
    Stopped,
}

/// <summary>
/// What a generation launched by <c>switchover deploy</c> reports to it: written by the generation (atomically) to the
/// file deploy named in <see cref="OutcomeFile.EnvironmentVariable"/>, while it starts and once it has taken over or
/// failed.
/// </summary>
/// <param name="LogLines">The generation's last log lines (at most <see cref="OutcomeFile.MaxLogLines"/>), oldest first.</param>
public sealed record GenerationOutcome(
    OutcomeKind Kind,
    int Pid,
    string? Namespace,
    long? GenerationId,
    string? Reason,
    double? LaunchToServingMs,
    IReadOnlyList<string> LogLines,
    DateTimeOffset At)
{
    public int Version { get; init; } = OutcomeFile.CurrentVersion;

    [JsonIgnore]
    public bool IsFinal => Kind != OutcomeKind.Starting;
}

/// <summary>
/// The outcome file of one deploy. It lives in the state root, not in the namespace's directory: deploy names it
/// before it knows the namespace, and a generation that fails as its namespace's only one removes that directory as
/// it leaves. The name carries the deploy's pid and start time, so a deploy that was killed before it could remove
/// its file is recognised as gone by the next deploy (<see cref="RemoveAbandoned"/>).
/// </summary>
public static class OutcomeFile
{
    /// <summary>Set by deploy in the environment of the generation it launches: the absolute path of the outcome file.</summary>
    public const string EnvironmentVariable = "SWITCHOVER_DEPLOY_OUTCOME";

    public const int MaxLogLines = 20;

    public const int CurrentVersion = 1;

    private const string Prefix = ".deploy-";

    /// <summary>
    /// The outcome file of the deploy <paramref name="deploy"/> under <paramref name="stateRoot"/>. Its name starts
    /// with a dot, which no namespace name has: commands that list namespaces skip it.
    /// </summary>
    public static string PathFor(string stateRoot, ProcessIdentity deploy) =>
        System.IO.Path.Combine(stateRoot, string.Create(CultureInfo.InvariantCulture, $"{Prefix}{deploy.Pid}-{deploy.StartTime}.json"));

    /// <summary>Reads an outcome file; null when it does not exist (yet) or cannot be read as one.</summary>
    public static GenerationOutcome? TryRead(string path)
    {
        try
        {
            var outcome = StateJson.DeserializeOutcome(File.ReadAllBytes(path));
            return outcome is { Version: CurrentVersion, LogLines: not null } ? outcome : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            // Absent (FileNotFoundException is an IOException), or not an outcome: the file is renamed into place
            // whole, so a half-written one is never seen.
            return null;
        }
    }

    /// <summary>Replaces the outcome file atomically (temporary file, rename): a reader sees the old or the new record.</summary>
    /// <exception cref="StateException">The file cannot be written; the message says why.</exception>
    public static void Write(string path, GenerationOutcome outcome) =>
        StateStore.WriteAtomically(path, StateJson.Serialize(outcome));

    public static void Remove(string path)
    {
        foreach (var file in new[] { path, path + ".tmp" })
        {
            try
            {
                File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Best effort: the next deploy removes what a gone deploy left.
            }
        }
    }

    /// <summary>Removes the outcome files of deploys that are no longer running.</summary>
    /// <returns>How many were removed.</returns>
    public static int RemoveAbandoned(string stateRoot, Func<ProcessIdentity, bool>? isAlive = null)
    {
        isAlive ??= p => p.IsAlive();
        string[] files;
        try
        {
            files = Directory.GetFiles(stateRoot, Prefix + "*");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }

        var removed = 0;
        foreach (var file in files)
        {
            if (ParseOwner(System.IO.Path.GetFileName(file)) is { } owner && !isAlive(owner))
            {
                Remove(file.EndsWith(".tmp", StringComparison.Ordinal) ? file[..^".tmp".Length] : file);
                removed++;
            }
        }

        return removed;
    }

    /// <summary>The deploy that owns a file named <c>.deploy-PID-STARTTIME.json[.tmp]</c>, or null for any other name.</summary>
    internal static ProcessIdentity? ParseOwner(string fileName)
    {
        if (!fileName.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        var rest = fileName[Prefix.Length..];
        var end = rest.IndexOf(".json", StringComparison.Ordinal);
        var parts = (end < 0 ? string.Empty : rest[..end]).Split('-');
        return parts.Length == 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
            && ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var startTime)
            ? new ProcessIdentity(pid, startTime)
            : null;
    }
}
