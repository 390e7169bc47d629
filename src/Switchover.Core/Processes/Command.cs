namespace Switchover.Processes;

/// <summary>
/// An external program invocation. Arguments are passed as an array and are never joined into a shell string.
/// </summary>
internal sealed record Command(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>Text written to the program's standard input, then closed. Null: standard input is closed at once.</summary>
    public string? StandardInput { get; init; }

    /// <summary>How long the program may run before it is killed. Defaults to 30 seconds.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Extra environment variables for the child process.</summary>
    public IReadOnlyDictionary<string, string>? Environment { get; init; }

    public static Command Create(string fileName, params string[] arguments) => new(fileName, arguments);

    /// <summary>How to start it: arguments one by one (never a shell), all three standard streams redirected, environment added.</summary>
    public System.Diagnostics.ProcessStartInfo ToStartInfo()
    {
        var startInfo = new System.Diagnostics.ProcessStartInfo(FileName)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in Arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in Environment ?? new Dictionary<string, string>())
        {
            startInfo.Environment[key] = value;
        }

        return startInfo;
    }

    public override string ToString() =>
        Arguments.Count == 0 ? FileName : FileName + " " + string.Join(' ', Arguments.Select(Quote));

    private static string Quote(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsLetterOrDigit(c) || "-_./:=,@%+".Contains(c))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}

internal sealed record CommandResult(int ExitCode, string StandardOutput, string StandardError, TimeSpan Duration);
