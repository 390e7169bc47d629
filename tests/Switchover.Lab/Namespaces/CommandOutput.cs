namespace Switchover.Lab;

/// <summary>What a program run to completion inside a namespace printed, and how it exited.</summary>
public sealed record CommandOutput(int ExitCode, string StandardOutput, string StandardError, TimeSpan Duration);
