using System.Buffers;
using System.Globalization;
using System.Text.Json;

namespace Switchover.State;

/// <summary>
/// The state file (<see cref="NamespaceState"/>) and the outcome file (<see cref="GenerationOutcome"/>) in JSON, read
/// and written with <see cref="Utf8JsonReader"/> and <see cref="Utf8JsonWriter"/> instead of the serializer.
/// </summary>
/// <remarks>
/// The format is the one the source-generated serializer wrote for these records, byte for byte: camelCase names in
/// declaration order, indented, nulls written; on reading, names match exactly, unknown properties are skipped and a
/// missing one takes its default (the constructor parameter's default value, else the type's). The unit tests hold
/// both directions to the serializer itself, so generations of either kind read each other's files.
///
/// Why not the serializer: every generation reads and writes the state file on its way to serving, and the
/// serializer's metadata for these records is generic over their value types (JsonPropertyInfoValues&lt;long&gt;,
/// converters over our records), which the framework's precompiled image does not hold. That was about 590 methods
/// JIT-compiled on every start, on the launch's critical path, and their code and metadata resident for the process's
/// life (docs/kernel-speed.md, "Third pass"). The reader and writer themselves are
/// precompiled in the framework.
/// </remarks>
internal static class StateJson
{
    private static readonly JsonWriterOptions Indented = new() { Indented = true };

    private delegate T ReadValue<out T>(ref Utf8JsonReader reader);

    public static byte[] Serialize(NamespaceState state) => Write(state, WriteState);

    public static byte[] Serialize(GenerationOutcome outcome) => Write(outcome, WriteOutcome);

    /// <summary>The state in <paramref name="json"/>; null when it holds a JSON null.</summary>
    /// <exception cref="JsonException">It is not JSON, or not a state; the message says what is wrong.</exception>
    public static NamespaceState? DeserializeState(ReadOnlySpan<byte> json) => Read(json, ReadState);

    /// <inheritdoc cref="DeserializeState"/>
    public static GenerationOutcome? DeserializeOutcome(ReadOnlySpan<byte> json) => Read(json, ReadOutcome);

    private static byte[] Write<T>(T value, Action<Utf8JsonWriter, T> write)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer, Indented))
        {
            write(writer, value);
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static T? Read<T>(ReadOnlySpan<byte> json, ReadValue<T> read)
        where T : class
    {
        var reader = new Utf8JsonReader(json);
        Next(ref reader);
        var value = reader.TokenType == JsonTokenType.Null ? null : read(ref reader);
        if (reader.Read())
        {
            throw new JsonException($"More follows the JSON value, at byte {reader.TokenStartIndex}.");
        }

        return value;
    }

    private static void WriteState(Utf8JsonWriter writer, NamespaceState state)
    {
        writer.WriteStartObject();
        writer.WriteNumber("version"u8, state.Version);
        writer.WriteString("namespace"u8, state.Namespace);
        writer.WriteNumber("lastGenerationId"u8, state.LastGenerationId);
        WriteList(writer, "generations"u8, state.Generations, WriteGeneration);
        writer.WriteBoolean("transactionPending"u8, state.TransactionPending);
        writer.WriteEndObject();
    }

    private static void WriteGeneration(Utf8JsonWriter writer, GenerationRecord generation)
    {
        writer.WriteStartObject();
        writer.WriteNumber("id"u8, generation.Id);
        writer.WriteNumber("pid"u8, generation.Pid);
        writer.WriteNumber("startTime"u8, generation.StartTime);
        writer.WritePropertyName("state"u8);
        EnumNames.Write(writer, generation.State);
        writer.WriteString("startedAt"u8, generation.StartedAt);
        WriteList(writer, "ports"u8, generation.Ports, WritePort);
        writer.WritePropertyName("steering"u8);
        EnumNames.Write(writer, generation.Steering);
        writer.WriteString("rollbackWindow"u8, generation.RollbackWindow.ToString("c", CultureInfo.InvariantCulture));
        WriteNullable(writer, "rollbackUntil"u8, generation.RollbackUntil);
        writer.WriteString("signalError"u8, generation.SignalError);
        WriteNullable(writer, "supersededSignal"u8, generation.SupersededSignal);
        writer.WriteEndObject();
    }

    private static void WritePort(Utf8JsonWriter writer, PortMapping port)
    {
        writer.WriteStartObject();
        writer.WriteNumber("publicPort"u8, port.PublicPort);
        writer.WriteNumber("privatePort"u8, port.PrivatePort);
        writer.WriteString("publicAddress"u8, port.PublicAddress);
        writer.WriteEndObject();
    }

    private static void WriteOutcome(Utf8JsonWriter writer, GenerationOutcome outcome)
    {
        writer.WriteStartObject();
        writer.WritePropertyName("kind"u8);
        EnumNames.Write(writer, outcome.Kind);
        writer.WriteNumber("pid"u8, outcome.Pid);
        writer.WriteString("namespace"u8, outcome.Namespace);
        WriteNullable(writer, "generationId"u8, outcome.GenerationId);
        writer.WriteString("reason"u8, outcome.Reason);
        WriteNullable(writer, "launchToServingMs"u8, outcome.LaunchToServingMs);
        WriteList(writer, "logLines"u8, outcome.LogLines, static (w, line) => w.WriteStringValue(line));
        writer.WriteString("at"u8, outcome.At);
        writer.WriteNumber("version"u8, outcome.Version);
        writer.WriteEndObject();
    }

    private static void WriteList<T>(Utf8JsonWriter writer, ReadOnlySpan<byte> name, IReadOnlyList<T>? items, Action<Utf8JsonWriter, T> write)
    {
        if (items is null)
        {
            writer.WriteNull(name);
            return;
        }

        writer.WriteStartArray(name);
        foreach (var item in items)
        {
            write(writer, item);
        }

        writer.WriteEndArray();
    }

    private static void WriteNullable(Utf8JsonWriter writer, ReadOnlySpan<byte> name, long? value)
    {
        if (value is { } v)
        {
            writer.WriteNumber(name, v);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    private static void WriteNullable(Utf8JsonWriter writer, ReadOnlySpan<byte> name, double? value)
    {
        if (value is { } v)
        {
            writer.WriteNumber(name, v);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    private static void WriteNullable(Utf8JsonWriter writer, ReadOnlySpan<byte> name, DateTimeOffset? value)
    {
        if (value is { } v)
        {
            writer.WriteString(name, v);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    private static NamespaceState ReadState(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.StartObject, "the state");
        int version = 0;
        string? name = null;
        long last = 0;
        List<GenerationRecord>? generations = null;
        var pending = false;
        while (NextProperty(ref reader))
        {
            if (reader.ValueTextEquals("version"u8))
            {
                version = Int32(ref reader, "version");
            }
            else if (reader.ValueTextEquals("namespace"u8))
            {
                name = String(ref reader, "namespace");
            }
            else if (reader.ValueTextEquals("lastGenerationId"u8))
            {
                last = Int64(ref reader, "lastGenerationId");
            }
            else if (reader.ValueTextEquals("generations"u8))
            {
                generations = List(ref reader, "generations", ReadGeneration);
            }
            else if (reader.ValueTextEquals("transactionPending"u8))
            {
                pending = Boolean(ref reader, "transactionPending");
            }
            else
            {
                SkipValue(ref reader);
            }
        }

        return new NamespaceState(version, name!, last, generations!) { TransactionPending = pending };
    }

    private static GenerationRecord ReadGeneration(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.StartObject, "a generation");
        long id = 0;
        int pid = 0;
        ulong startTime = 0;
        var state = default(GenerationState);
        var startedAt = default(DateTimeOffset);
        List<PortMapping>? ports = null;
        var steering = Steering.Redirect;
        var window = TimeSpan.Zero;
        DateTimeOffset? until = null;
        string? signalError = null;
        int? signal = null;
        while (NextProperty(ref reader))
        {
            if (reader.ValueTextEquals("id"u8))
            {
                id = Int64(ref reader, "id");
            }
            else if (reader.ValueTextEquals("pid"u8))
            {
                pid = Int32(ref reader, "pid");
            }
            else if (reader.ValueTextEquals("startTime"u8))
            {
                startTime = UInt64(ref reader, "startTime");
            }
            else if (reader.ValueTextEquals("state"u8))
            {
                Next(ref reader);
                state = EnumNames.Read<GenerationState>(ref reader);
            }
            else if (reader.ValueTextEquals("startedAt"u8))
            {
                startedAt = Time(ref reader, "startedAt") ?? throw NotNull("startedAt");
            }
            else if (reader.ValueTextEquals("ports"u8))
            {
                ports = List(ref reader, "ports", ReadPort);
            }
            else if (reader.ValueTextEquals("steering"u8))
            {
                Next(ref reader);
                steering = EnumNames.Read<Steering>(ref reader);
            }
            else if (reader.ValueTextEquals("rollbackWindow"u8))
            {
                window = Duration(ref reader, "rollbackWindow");
            }
            else if (reader.ValueTextEquals("rollbackUntil"u8))
            {
                until = Time(ref reader, "rollbackUntil");
            }
            else if (reader.ValueTextEquals("signalError"u8))
            {
                signalError = String(ref reader, "signalError");
            }
            else if (reader.ValueTextEquals("supersededSignal"u8))
            {
                signal = NullableInt32(ref reader, "supersededSignal");
            }
            else
            {
                SkipValue(ref reader);
            }
        }

        return new GenerationRecord(id, pid, startTime, state, startedAt, ports!, steering)
        {
            RollbackWindow = window,
            RollbackUntil = until,
            SignalError = signalError,
            SupersededSignal = signal,
        };
    }

    private static PortMapping ReadPort(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.StartObject, "a port");
        int publicPort = 0, privatePort = 0;
        string? address = null;
        while (NextProperty(ref reader))
        {
            if (reader.ValueTextEquals("publicPort"u8))
            {
                publicPort = Int32(ref reader, "publicPort");
            }
            else if (reader.ValueTextEquals("privatePort"u8))
            {
                privatePort = Int32(ref reader, "privatePort");
            }
            else if (reader.ValueTextEquals("publicAddress"u8))
            {
                address = String(ref reader, "publicAddress");
            }
            else
            {
                SkipValue(ref reader);
            }
        }

        return new PortMapping(publicPort, privatePort, address);
    }

    private static GenerationOutcome ReadOutcome(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.StartObject, "the outcome");
        var kind = default(OutcomeKind);
        int pid = 0;
        string? name = null, reason = null;
        long? id = null;
        double? ms = null;
        List<string>? lines = null;
        var at = default(DateTimeOffset);
        // Absent, the version is 0 (not the property's initializer), as the serializer read it: not an outcome.
        var version = 0;
        while (NextProperty(ref reader))
        {
            if (reader.ValueTextEquals("kind"u8))
            {
                Next(ref reader);
                kind = EnumNames.Read<OutcomeKind>(ref reader);
            }
            else if (reader.ValueTextEquals("pid"u8))
            {
                pid = Int32(ref reader, "pid");
            }
            else if (reader.ValueTextEquals("namespace"u8))
            {
                name = String(ref reader, "namespace");
            }
            else if (reader.ValueTextEquals("generationId"u8))
            {
                id = NullableInt64(ref reader, "generationId");
            }
            else if (reader.ValueTextEquals("reason"u8))
            {
                reason = String(ref reader, "reason");
            }
            else if (reader.ValueTextEquals("launchToServingMs"u8))
            {
                Next(ref reader);
                ms = reader.TokenType == JsonTokenType.Null ? null
                    : reader.TokenType == JsonTokenType.Number && reader.TryGetDouble(out var d) ? d
                    : throw Invalid("launchToServingMs", "a number");
            }
            else if (reader.ValueTextEquals("logLines"u8))
            {
                lines = List(ref reader, "logLines", static (ref Utf8JsonReader r) => StringHere(ref r, "logLines")!);
            }
            else if (reader.ValueTextEquals("at"u8))
            {
                at = Time(ref reader, "at") ?? throw NotNull("at");
            }
            else if (reader.ValueTextEquals("version"u8))
            {
                version = Int32(ref reader, "version");
            }
            else
            {
                SkipValue(ref reader);
            }
        }

        return new GenerationOutcome(kind, pid, name, id, reason, ms, lines!, at) { Version = version };
    }

    /// <summary>At a property name: false at the object's end.</summary>
    private static bool NextProperty(ref Utf8JsonReader reader)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.PropertyName;
    }

    private static void Next(ref Utf8JsonReader reader)
    {
        if (!reader.Read())
        {
            throw new JsonException("The JSON ends early.");
        }
    }

    private static void SkipValue(ref Utf8JsonReader reader)
    {
        Next(ref reader);
        reader.Skip();
    }

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType token, string what)
    {
        if (reader.TokenType != token)
        {
            throw new JsonException($"Expected {what} as a JSON {token}, found a {reader.TokenType} at byte {reader.TokenStartIndex}.");
        }
    }

    private static List<T>? List<T>(ref Utf8JsonReader reader, string name, ReadValue<T> item)
    {
        Next(ref reader);
        if (reader.TokenType == JsonTokenType.Null)
        {
            return null;
        }

        Expect(ref reader, JsonTokenType.StartArray, $"'{name}'");
        var list = new List<T>();
        Next(ref reader);
        while (reader.TokenType != JsonTokenType.EndArray)
        {
            list.Add(item(ref reader));
            Next(ref reader);
        }

        return list;
    }

    private static int Int32(ref Utf8JsonReader reader, string name) =>
        NullableInt32(ref reader, name) ?? throw NotNull(name);

    private static int? NullableInt32(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.Null ? null
            : reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out var value) ? value
            : throw Invalid(name, "a whole number (32 bits)");
    }

    private static long Int64(ref Utf8JsonReader reader, string name) =>
        NullableInt64(ref reader, name) ?? throw NotNull(name);

    private static long? NullableInt64(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.Null ? null
            : reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var value) ? value
            : throw Invalid(name, "a whole number");
    }

    private static ulong UInt64(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.Number && reader.TryGetUInt64(out var value) ? value
            : throw Invalid(name, "a whole number not below 0");
    }

    private static bool Boolean(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType switch
        {
            JsonTokenType.True => true,
            JsonTokenType.False => false,
            _ => throw Invalid(name, "true or false"),
        };
    }

    private static string? String(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return StringHere(ref reader, name);
    }

    /// <summary>The string at the reader's current token (an array's item).</summary>
    private static string? StringHere(ref Utf8JsonReader reader, string name) =>
        reader.TokenType switch
        {
            JsonTokenType.Null => null,
            JsonTokenType.String => reader.GetString(),
            _ => throw Invalid(name, "a string"),
        };

    private static DateTimeOffset? Time(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.Null ? null
            : reader.TokenType == JsonTokenType.String && reader.TryGetDateTimeOffset(out var value) ? value
            : throw Invalid(name, "a time in ISO 8601");
    }

    private static TimeSpan Duration(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType == JsonTokenType.String
            && TimeSpan.TryParseExact(reader.GetString(), "c", CultureInfo.InvariantCulture, out var value) ? value
            : throw Invalid(name, "a duration as [-][d.]hh:mm:ss[.fffffff]");
    }

    private static JsonException Invalid(string name, string what) => new($"'{name}' must be {what}.");

    private static JsonException NotNull(string name) => new($"'{name}' must not be null.");
}
