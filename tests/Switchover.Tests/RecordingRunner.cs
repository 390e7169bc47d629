using Switchover.Processes;

namespace Switchover.Tests;

/// <summary>Records the commands it is asked to run; answers them with a function the test sets.</summary>
internal sealed class RecordingRunner : ICommandRunner
{
    public List<Command> Commands { get; } = [];

    public Func<Command, CommandResult> Answer { get; set; } = _ => new CommandResult(0, string.Empty, string.Empty, TimeSpan.Zero);

    public IEnumerable<string> Scripts => Commands.Select(c => c.StandardInput ?? string.Empty);

    public async Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken)
    {
        var result = await TryRunAsync(command, cancellationToken);
        return result.ExitCode == 0
            ? result
            : throw new CommandException(command.ToString(), result.ExitCode, result.StandardError, "failed: " + result.StandardError);
    }

    public Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken)
    {
        Commands.Add(command);
        return Task.FromResult(Answer(command));
    }
}
