namespace Switchover.Processes;

/// <summary>Runs external programs. The one seam between Switchover and the tools it drives (nft, conntrack, ip).</summary>
internal interface ICommandRunner
{
    /// <summary>Runs the command to completion. Throws <see cref="CommandException"/> on a non-zero exit code.</summary>
    Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken);

    /// <summary>Runs the command to completion and returns its result whatever the exit code.</summary>
    Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken);
}
