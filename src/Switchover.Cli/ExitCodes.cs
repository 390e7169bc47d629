namespace Switchover.Cli;

/// <summary>The process exit codes of the <c>switchover</c> tool. Scripts depend on them: do not renumber.</summary>
internal static class ExitCodes
{
    public const int Success = 0;

    /// <summary>The command ran but something is wrong or could not be done: no state, a corrupt state file, a tool failed.</summary>
    public const int Failure = 1;

    /// <summary>The command line is wrong (unknown option, missing or invalid value). Nothing was touched.</summary>
    public const int Usage = 2;

    /// <summary>doctor found things to look at (warnings) but nothing that is sure to break (no problem).</summary>
    public const int Warnings = 3;
}
