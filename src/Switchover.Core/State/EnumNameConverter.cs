using System.Text.Json;
using System.Text.Json.Serialization;

namespace Switchover.State;

/// <summary>
/// An enum in the state files and the agent's protocol as its declared name, read without regard to case, as
/// <see cref="JsonStringEnumConverter{TEnum}"/> does. Not that converter: reading a name, it tests the text against a
/// generated integer regex, so the first state file a generation read loaded System.Text.RegularExpressions and
/// compiled a regex into every process (about 0.5 MB resident; docs/kernel-speed.md). A number, or a name the enum
/// does not declare, is refused.
/// </summary>
public sealed class EnumNameConverter<TEnum> : JsonConverter<TEnum>
    where TEnum : struct, Enum
{
    public override TEnum Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw new JsonException($"A {typeof(TEnum).Name} must be one of the names {string.Join(", ", Enum.GetNames<TEnum>())}, not a {reader.TokenType}.");
        }

        var text = reader.GetString();
        foreach (var value in Enum.GetValues<TEnum>())
        {
            if (string.Equals(Enum.GetName(value), text, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }

        throw new JsonException($"'{text}' is not a {typeof(TEnum).Name}: one of {string.Join(", ", Enum.GetNames<TEnum>())}.");
    }

    public override void Write(Utf8JsonWriter writer, TEnum value, JsonSerializerOptions options) =>
        writer.WriteStringValue(Enum.GetName(value) ?? throw new JsonException($"{value} is not a declared {typeof(TEnum).Name}."));
}
