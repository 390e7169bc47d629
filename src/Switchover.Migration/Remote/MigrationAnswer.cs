using System.Text.Json;
using System.Text.Json.Serialization;
using Switchover.Migration.Plan;

namespace Switchover.Migration.Remote;

/// <summary>
/// What <c>switchover migrate VERB --json</c> prints on standard output, whether it succeeded or not: the machine's
/// reading of the outcome, so that a host driving this one over SSH can act on it.
/// </summary>
public sealed record MigrationAnswer(bool Ok, bool DryRun, IReadOnlyList<MigrationAnswerChange> Changes, string? Note, IReadOnlyList<string> Problems)
{
    /// <summary>The peer's own answer, when the command drove one (its JSON, as the peer printed it).</summary>
    public IReadOnlyList<MigrationAnswer>? Peer { get; init; }

    public static MigrationAnswer From(MigrationOutcome outcome) =>
        new(true, outcome.DryRun, outcome.Changes.Select(c => new MigrationAnswerChange(c.Id, c.Description)).ToList(), outcome.Note, []);

    public static MigrationAnswer Failed(IEnumerable<string> problems) => new(false, false, [], null, problems.ToList());

    public string ToJson() => JsonSerializer.Serialize(this, MigrationAnswerJsonContext.Default.MigrationAnswer);

    /// <summary>The answer in <paramref name="json"/>, or null when it is not one (e.g. a remote program too old to have --json).</summary>
    public static MigrationAnswer? TryParse(string json)
    {
        try
        {
            return JsonSerializer.Deserialize(json.Trim(), MigrationAnswerJsonContext.Default.MigrationAnswer);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The answer as lines for a person, and for the journal.</summary>
    public IReadOnlyList<string> Describe() =>
    [
        .. Changes.Select(c => (DryRun ? "would: " : "did: ") + c.Description),
        .. Note is null ? [] : new[] { Note },
        .. Problems,
    ];
}

public sealed record MigrationAnswerChange(string Id, string Description);

[JsonSourceGenerationOptions(WriteIndented = false, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(MigrationAnswer))]
internal sealed partial class MigrationAnswerJsonContext : JsonSerializerContext;
