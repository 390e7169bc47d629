using Switchover.Processes;

namespace Switchover.Migration.Tests;

/// <summary>Records the commands it is asked to run; answers them with a function the test sets.</summary>
internal sealed class RecordingRunner : ICommandRunner
{
    public List<Command> Commands { get; } = [];

    public Func<Command, CommandResult> Answer { get; set; } = _ => Ok();

    /// <summary>Each command as it would be typed, for assertions that read like the shell.</summary>
    public IEnumerable<string> Lines => Commands.Select(c => c.ToString());

    public static CommandResult Ok(string stdout = "") => new(0, stdout, string.Empty, TimeSpan.Zero);

    public static CommandResult Fail(string stderr, int exitCode = 2) => new(exitCode, string.Empty, stderr, TimeSpan.Zero);

    public async Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken)
    {
        var result = await TryRunAsync(command, cancellationToken);
        return result.ExitCode == 0
            ? result
            : throw new CommandException(command.ToString(), result.ExitCode, result.StandardError, $"'{command}' failed: " + result.StandardError);
    }

    public Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken)
    {
        Commands.Add(command);
        return Task.FromResult(Answer(command));
    }
}
