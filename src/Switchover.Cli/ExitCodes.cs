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

    // switchover deploy: the new generation did not take over, and why. The running generation keeps serving.

    /// <summary>It did not get ready within its Switchover:ReadinessTimeout (health checks or its readiness request failed).</summary>
    public const int DeployUnhealthy = 4;

    /// <summary>It exited before it took over without saying why (a crash, a kill, or a stop signal).</summary>
    public const int DeployCrashed = 5;

    /// <summary>It waited longer than Switchover:LockTimeout for the namespace lock (another deploy held it).</summary>
    public const int DeployLockTimeout = 6;

    /// <summary>A newer generation took over first, so it stepped aside.</summary>
    public const int DeploySuperseded = 7;

    /// <summary>The command could not be started, or could not start as a generation (configuration, endpoints, nft, Mode=Disabled).</summary>
    public const int DeployStartFailed = 8;

    /// <summary>deploy's --timeout passed first; deploy stopped the generation.</summary>
    public const int DeployTimedOut = 9;

    /// <summary>switchover rollback: no superseded generation is alive within its rollback window.</summary>
    public const int NothingToRollBackTo = 10;
}
