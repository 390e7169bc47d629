using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>
/// The serializer that wrote the state and outcome files before <see cref="StateJson"/> (and that earlier generations
/// still running during an upgrade write them with): the oracle <see cref="StateJsonTests"/> holds it to.
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(NamespaceState))]
[JsonSerializable(typeof(GenerationOutcome))]
internal sealed partial class SerializerJsonContext : JsonSerializerContext;

public sealed class StateJsonTests
{
    private static readonly DateTimeOffset At = new(2026, 12, 2, 1, 2, 3, 456, TimeSpan.FromHours(2));

    public static TheoryData<string> States => new(StateCases.Keys);

    private static readonly Dictionary<string, NamespaceState> StateCases = new()
    {
        ["empty"] = NamespaceState.Empty(NamespaceName.Parse("echo")),
        ["one active, every optional field unset"] = NamespaceState.Empty(NamespaceName.Parse("echo"))
            .With(new GenerationRecord(1, 101, 7, GenerationState.Active, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40001)])),
        ["every field, both steerings, addresses of both families"] = new NamespaceState(1, "shop-api", long.MaxValue,
        [
            new GenerationRecord(41, 4_000_000, ulong.MaxValue, GenerationState.Draining, At,
                [new PortMapping(80, 40001, "0.0.0.0"), new PortMapping(443, 40002, "2001:db8::1"), new PortMapping(8443, 65535, "192.0.2.7")], Steering.Tproxy)
            {
                RollbackWindow = new TimeSpan(1, 2, 3, 4, 567),
                RollbackUntil = At.AddSeconds(10),
                SignalError = "kill(41): \"No such process\" \u00e9\u4e2d </script> & \\ \t",
                SupersededSignal = 12,
            },
            new GenerationRecord(42, 2, 0, GenerationState.Starting, At.ToUniversalTime(), [], Steering.Redirect)
            {
                RollbackWindow = TimeSpan.FromMilliseconds(1.5),
            },
            new GenerationRecord(43, 3, 9, GenerationState.Active, At.AddTicks(1), [new PortMapping(1, 2)]) { RollbackWindow = -TimeSpan.FromSeconds(1) },
        ]) { TransactionPending = true },
    };

    public static TheoryData<string> Outcomes => new(OutcomeCases.Keys);

    private static readonly Dictionary<string, GenerationOutcome> OutcomeCases = new()
    {
        ["starting, nothing known yet"] = new GenerationOutcome(OutcomeKind.Starting, 100, null, null, null, null, [], At),
        ["took over"] = new GenerationOutcome(OutcomeKind.TookOver, 100, "echo", 7, null, 412.34567890123, ["info: one", "warn: \"two\" \u00e9"], At),
        ["failed, whole numbers and extremes"] = new GenerationOutcome(OutcomeKind.StartFailed, int.MaxValue, "a-b", long.MinValue, "line\nbreak", 1e300, ["x"], DateTimeOffset.MaxValue) { Version = 2 },
        ["stopped, a whole millisecond count"] = new GenerationOutcome(OutcomeKind.Stopped, 1, "n", 0, "r", 5, [], DateTimeOffset.MinValue),
    };

    [Theory]
    [MemberData(nameof(States))]
    public void A_state_is_written_byte_for_byte_as_the_serializer_wrote_it_and_read_back_whole(string name) =>
        AssertAsTheSerializer(StateCases[name], SerializerJsonContext.Default.NamespaceState, StateJson.Serialize, b => StateJson.DeserializeState(b));

    [Theory]
    [MemberData(nameof(Outcomes))]
    public void An_outcome_is_written_byte_for_byte_as_the_serializer_wrote_it_and_read_back_whole(string name) =>
        AssertAsTheSerializer(OutcomeCases[name], SerializerJsonContext.Default.GenerationOutcome, StateJson.Serialize, b => StateJson.DeserializeOutcome(b));

    private static void AssertAsTheSerializer<T>(T value, JsonTypeInfo<T> serializer, Func<T, byte[]> write, Func<byte[], T?> read)
        where T : class
    {
        var expected = JsonSerializer.SerializeToUtf8Bytes(value, serializer);

        Assert.Equal(Encoding.UTF8.GetString(expected), Encoding.UTF8.GetString(write(value)));
        Assert.Equal(Encoding.UTF8.GetString(expected), JsonSerializer.Serialize(read(expected)!, serializer));
    }

    [Theory]
    // A file from before TPROXY, the rollback window and the pending flag: the defaults fill in.
    [InlineData("""{"version":1,"namespace":"echo","lastGenerationId":3,"generations":[{"id":3,"pid":9,"startTime":5,"state":"Active","startedAt":"2026-01-01T00:00:00+00:00","ports":[{"publicPort":80,"privatePort":4000}]}]}""")]
    // Properties in another order, names of enums in another case, properties nobody knows (of every shape).
    [InlineData("""{"generations":[{"ports":[{"privatePort":4000,"extra":[1,{"a":[]}],"publicPort":80,"publicAddress":null}],"state":"draining","steering":"TPROXY","id":3,"future":{"x":{"y":[true,null]}},"pid":9,"startTime":5,"startedAt":"2026-01-01T00:00:00Z","rollbackWindow":"1.00:00:00.5","rollbackUntil":null,"signalError":null,"supersededSignal":null}],"namespace":"echo","version":1,"lastGenerationId":3,"transactionPending":false,"comment":"x"}""")]
    // A property given twice: the last one counts. Null lists, as a hand-edited file may have.
    [InlineData("""{"version":1,"version":2,"namespace":null,"lastGenerationId":0,"generations":null}""")]
    [InlineData("""{"version":1,"namespace":"e","lastGenerationId":0,"generations":[{"id":1,"pid":2,"startTime":3,"state":"Starting","startedAt":"2026-01-01T00:00:00+05:30","ports":null}]}""")]
    [InlineData("""{}""")]
    [InlineData("""  null  """)]
    public void A_state_file_the_serializer_reads_is_read_to_the_same_state(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);

        Assert.Equal(Oracle(JsonSerializer.Deserialize(bytes, SerializerJsonContext.Default.NamespaceState)), Oracle(StateJson.DeserializeState(bytes)));
    }

    [Theory]
    [InlineData("""{"kind":"tookover","pid":1,"logLines":["a"],"at":"2026-01-01T00:00:00Z"}""")]
    [InlineData("""{"kind":"Unhealthy","pid":1,"namespace":"n","generationId":null,"reason":"r","launchToServingMs":12,"logLines":[],"at":"2026-01-01T00:00:00Z","version":1,"new":[{}]}""")]
    public void An_outcome_file_the_serializer_reads_is_read_to_the_same_outcome(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);

        Assert.Equal(Oracle(JsonSerializer.Deserialize(bytes, SerializerJsonContext.Default.GenerationOutcome)), Oracle(StateJson.DeserializeOutcome(bytes)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("""{"version":1} {}""")]
    [InlineData("""{"version":1,}""")]
    [InlineData("""{"version":1 /* hand-edited */}""")]
    [InlineData("""[]""")]
    [InlineData("""{"version":"1"}""")]
    [InlineData("""{"version":1.5}""")]
    [InlineData("""{"version":null}""")]
    [InlineData("""{"lastGenerationId":9223372036854775808}""")]
    [InlineData("""{"transactionPending":"yes"}""")]
    [InlineData("""{"namespace":7}""")]
    [InlineData("""{"generations":{}}""")]
    [InlineData("""{"generations":[1]}""")]
    [InlineData("""{"generations":[{"state":1}]}""")]
    [InlineData("""{"generations":[{"state":"Retired"}]}""")]
    [InlineData("""{"generations":[{"startTime":-1}]}""")]
    [InlineData("""{"generations":[{"startedAt":"yesterday"}]}""")]
    [InlineData("""{"generations":[{"startedAt":null}]}""")]
    [InlineData("""{"generations":[{"rollbackWindow":"ten seconds"}]}""")]
    [InlineData("""{"generations":[{"rollbackWindow":10}]}""")]
    [InlineData("""{"generations":[{"ports":[{"publicPort":"80"}]}]}""")]
    public void What_the_serializer_refuses_as_a_state_is_refused(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);

        Assert.ThrowsAny<JsonException>(() => JsonSerializer.Deserialize(bytes, SerializerJsonContext.Default.NamespaceState));
        Assert.ThrowsAny<JsonException>(() => StateJson.DeserializeState(bytes));
    }

    [Theory]
    [InlineData("""{"kind":3}""")]
    [InlineData("""{"launchToServingMs":"12"}""")]
    [InlineData("""{"logLines":[1]}""")]
    [InlineData("""{"logLines":"a"}""")]
    [InlineData("""{"at":null}""")]
    public void What_the_serializer_refuses_as_an_outcome_is_refused(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);

        Assert.ThrowsAny<JsonException>(() => JsonSerializer.Deserialize(bytes, SerializerJsonContext.Default.GenerationOutcome));
        Assert.ThrowsAny<JsonException>(() => StateJson.DeserializeOutcome(bytes));
    }

    private static string Oracle(NamespaceState? state) => JsonSerializer.Serialize(state, SerializerJsonContext.Default.NamespaceState);

    private static string Oracle(GenerationOutcome? outcome) => JsonSerializer.Serialize(outcome, SerializerJsonContext.Default.GenerationOutcome);
}
