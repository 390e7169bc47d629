namespace Switchover.Tests;

public sealed class NamespaceNameTests
{
    [Theory]
    [InlineData("echo")]
    [InlineData("my-app_2")]
    [InlineData("a")]
    public void Valid_names_are_accepted(string name) => Assert.Equal("switchover_" + name, NamespaceName.Parse(name).TableName);

    [Theory]
    [InlineData("x\"; flush ruleset", "'\"'")]
    [InlineData("x; delete table inet filter", "';'")]
    [InlineData("Echo", "'E'")]
    [InlineData("a.b", "'.'")]
    [InlineData("a\nb", "'?'")]
    [InlineData("", "empty")]
    public void Names_that_could_escape_a_table_name_are_rejected_with_what_is_allowed(string name, string said)
    {
        var error = Assert.Throws<ArgumentException>(() => NamespaceName.Parse(name));
        Assert.Contains(said, error.Message, StringComparison.Ordinal);
        Assert.Contains("[a-z0-9_-]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Names_longer_than_the_bound_are_rejected()
    {
        var error = Assert.Throws<ArgumentException>(() => NamespaceName.Parse(new string('a', NamespaceName.MaxLength + 1)));
        Assert.Contains($"at most {NamespaceName.MaxLength}", error.Message, StringComparison.Ordinal);
        Assert.NotNull(NamespaceName.Parse(new string('a', NamespaceName.MaxLength)));
    }

    [Theory]
    [InlineData("EchoServer", "echoserver")]
    [InlineData("My.Company.Api", "my-company-api")]
    [InlineData("...", "app")]
    public void The_default_namespace_is_derived_from_the_application_name(string applicationName, string expected) =>
        Assert.Equal(expected, NamespaceName.FromApplicationName(applicationName).Value);
}
