namespace Switchover.Processes;

/// <summary>An external program failed. Carries the command, its exit code and its standard error.</summary>
public class CommandException : Exception
{
    internal CommandException(string commandLine, int? exitCode, string standardError, string message, Exception? inner = null)
        : base(message, inner)
    {
        CommandLine = commandLine;
        ExitCode = exitCode;
        StandardError = standardError;
    }

    /// <summary>The command as it would be typed in a shell (for reading, never for running).</summary>
    public string CommandLine { get; }

    /// <summary>The exit code, or null when the program did not run to completion.</summary>
    public int? ExitCode { get; }

    public string StandardError { get; }
}

/// <summary>The program was not found or could not be started.</summary>
public sealed class CommandNotFoundException : CommandException
{
    internal CommandNotFoundException(string commandLine, string fileName, Exception inner)
        : base(commandLine, null, string.Empty,
            $"'{fileName}' could not be started ({inner.Message}). Install it or put it on PATH.", inner)
    {
        FileName = fileName;
    }

    public string FileName { get; }
}
