using System.ComponentModel;
using System.Diagnostics;

namespace Switchover.Processes;

internal sealed class CommandRunner : ICommandRunner
{
    public static CommandRunner Instance { get; } = new();

    public async Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken)
    {
        var result = await TryRunAsync(command, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            var stderr = result.StandardError.Trim();
            throw new CommandException(command.ToString(), result.ExitCode, stderr,
                $"'{command}' exited with code {result.ExitCode}: {(stderr.Length > 0 ? stderr : "(no error output)")}");
        }

        return result;
    }

    public async Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken)
    {
        var startInfo = command.ToStartInfo();
        using var process = new Process { StartInfo = startInfo };
        var stopwatch = Stopwatch.StartNew();
        try
        {
            process.Start();
        }
        catch (Win32Exception e)
        {
            throw new CommandNotFoundException(command.ToString(), command.FileName, e);
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(command.Timeout);
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            if (command.StandardInput is not null)
            {
                await process.StandardInput.WriteAsync(command.StandardInput.AsMemory(), timeout.Token).ConfigureAwait(false);
            }

            process.StandardInput.Close();
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            return new CommandResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false), stopwatch.Elapsed);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            KillQuietly(process);
            if (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException($"'{command}' was cancelled.", e, cancellationToken);
            }

            if (e is IOException)
            {
                throw new CommandException(command.ToString(), null, string.Empty, $"'{command}' failed: {e.Message}", e);
            }

            throw new CommandException(command.ToString(), null, string.Empty,
                $"'{command}' did not finish within {command.Timeout.TotalSeconds:0.#} s and was killed.", e);
        }
    }

    private static void KillQuietly(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }
}
