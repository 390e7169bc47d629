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
    public override TEnum Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => EnumNames.Read<TEnum>(ref reader);

    public override void Write(Utf8JsonWriter writer, TEnum value, JsonSerializerOptions options) => EnumNames.Write(writer, value);
}

/// <summary>
/// What <see cref="EnumNameConverter{TEnum}"/> does, for <see cref="StateJson"/>'s own reader and writer (which use no
/// converter, so that no converter type over our enums is loaded).
/// </summary>
internal static class EnumNames
{
    /// <summary>The current token as a declared name of <typeparamref name="TEnum"/>, without regard to case.</summary>
    public static TEnum Read<TEnum>(ref Utf8JsonReader reader)
        where TEnum : struct, Enum
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

    public static void Write<TEnum>(Utf8JsonWriter writer, TEnum value)
        where TEnum : struct, Enum =>
        writer.WriteStringValue(Enum.GetName(value) ?? throw new JsonException($"{value} is not a declared {typeof(TEnum).Name}."));
}
