using Switchover.Processes;

namespace Switchover.Tests;

public sealed class CommandRunnerTests
{
    [Fact(Timeout = 10000)]
    public async Task Standard_input_reaches_the_program_and_its_output_comes_back()
    {
        var result = await CommandRunner.Instance.RunAsync(Command.Create("cat") with { StandardInput = "table inet x {}\n" }, CancellationToken.None);
        Assert.Equal("table inet x {}\n", result.StandardOutput);
    }

    [Fact(Timeout = 10000)]
    public async Task A_failure_carries_the_command_the_exit_code_and_stderr()
    {
        var error = await Assert.ThrowsAsync<CommandException>(() =>
            CommandRunner.Instance.RunAsync(Command.Create("sh", "-c", "echo boom >&2; exit 3"), CancellationToken.None));
        Assert.Equal(3, error.ExitCode);
        Assert.Equal("boom", error.StandardError);
        Assert.Contains("sh -c 'echo boom >&2; exit 3'", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task Arguments_are_passed_as_they_are_never_through_a_shell()
    {
        var result = await CommandRunner.Instance.RunAsync(Command.Create("printf", "%s|", "a b", "$(id)", "x\"; flush ruleset"), CancellationToken.None);
        Assert.Equal("a b|$(id)|x\"; flush ruleset|", result.StandardOutput);
    }

    [Fact(Timeout = 10000)]
    public async Task A_program_that_overruns_its_timeout_is_killed()
    {
        var error = await Assert.ThrowsAsync<CommandException>(() =>
            CommandRunner.Instance.RunAsync(Command.Create("sleep", "30") with { Timeout = TimeSpan.FromMilliseconds(300) }, CancellationToken.None));
        Assert.Contains("did not finish within", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task A_missing_program_says_to_install_it()
    {
        var error = await Assert.ThrowsAsync<CommandNotFoundException>(() =>
            CommandRunner.Instance.RunAsync(Command.Create("/nonexistent/nft", "list", "ruleset"), CancellationToken.None));
        Assert.Contains("Install it or put it on PATH", error.Message, StringComparison.Ordinal);
    }
}
