using System.Text.Json;
using Switchover.State;

namespace Switchover.Tests;

public sealed class EnumNameConverterTests
{
    private static readonly JsonSerializerOptions Options = new() { Converters = { new EnumNameConverter<Steering>() } };

    [Fact]
    public void A_value_is_written_as_its_declared_name_and_read_back_whatever_its_case()
    {
        Assert.Equal("\"Redirect\"", JsonSerializer.Serialize(Steering.Redirect, Options));
        Assert.Equal(Steering.Redirect, JsonSerializer.Deserialize<Steering>("\"Redirect\"", Options));
        Assert.Equal(Steering.Tproxy, JsonSerializer.Deserialize<Steering>("\"tproxy\"", Options));
    }

    [Theory]
    [InlineData("1")]
    [InlineData("\"1\"")]
    [InlineData("\"Nat\"")]
    [InlineData("\"Tproxy,Redirect\"")]
    public void A_number_or_an_undeclared_name_is_refused_with_the_names_it_may_be(string json)
    {
        var e = Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<Steering>(json, Options));
        Assert.Contains("Tproxy, Redirect", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_state_files_enums_go_through_it_and_never_load_the_regex_engine()
    {
        // The reason the converter exists: JsonStringEnumConverter's read path loads System.Text.RegularExpressions.
        // Asserted on the attribute, as assembly loads are process-wide and other tests load the regex engine.
        foreach (var type in new[] { typeof(Steering), typeof(GenerationState), typeof(OutcomeKind) })
        {
            var attribute = (System.Text.Json.Serialization.JsonConverterAttribute)Attribute.GetCustomAttribute(type, typeof(System.Text.Json.Serialization.JsonConverterAttribute))!;
            Assert.Equal(typeof(EnumNameConverter<>).MakeGenericType(type), attribute.ConverterType);
        }
    }
}
