namespace Switchover.Lab.Tests;

public sealed class SignalsTests
{
    [Theory(Timeout = 30_000)]
    [InlineData("HUP", Signals.Hangup)]
    [InlineData("INT", Signals.Interrupt)]
    [InlineData("QUIT", Signals.Quit)]
    [InlineData("KILL", Signals.Kill)]
    [InlineData("USR1", Signals.User1)]
    [InlineData("USR2", Signals.User2)]
    [InlineData("TERM", Signals.Terminate)]
    public async Task Signal_numbers_are_the_ones_the_system_uses(string name, int number)
    {
        var output = await Netns.RunAsync("bash", "-c", "kill -l " + name);

        Assert.Equal(number.ToString(System.Globalization.CultureInfo.InvariantCulture), output.Trim());
    }
}
