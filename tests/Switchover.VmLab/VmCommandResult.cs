namespace Switchover.VmLab;

/// <summary>How a command run in the VM ended and what it printed.</summary>
public sealed record VmCommandResult(string Script, int ExitCode, string StandardOutput, string StandardError, bool TimedOut, TimeSpan Duration)
{
    public bool Succeeded => ExitCode == 0 && !TimedOut;

    /// <summary>Returns this result if the command exited 0; otherwise throws with the script, exit code and both outputs.</summary>
    public VmCommandResult EnsureSuccess()
    {
        if (!Succeeded)
        {
            throw new VmCommandException(this);
        }

        return this;
    }

    public override string ToString() =>
        $"`{Script.Trim()}` {(TimedOut ? "timed out" : $"exited {ExitCode}")} after {Duration.TotalSeconds:0.0} s" +
        (StandardOutput.Length > 0 ? $"\nstdout:\n{StandardOutput.TrimEnd()}" : "") +
        (StandardError.Length > 0 ? $"\nstderr:\n{StandardError.TrimEnd()}" : "");
}

/// <summary>A command in the VM failed or timed out (from <see cref="VmCommandResult.EnsureSuccess"/>).</summary>
public sealed class VmCommandException : VmLabException
{
    public VmCommandException(VmCommandResult result)
        : base("A command in the VM failed: " + result)
    {
        Result = result;
    }

    public VmCommandResult Result { get; }
}
