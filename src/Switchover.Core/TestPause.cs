using System.Globalization;
using Switchover.Interop;

namespace Switchover;

/// <summary>
/// Test only: lets the fault-injection suite stop a process at an instant of the takeover that no log line marks.
/// With <c>SWITCHOVER_TEST_PAUSE_AT=transaction-applied</c> (or <c>takeover-begun</c>, <c>state-written</c>, <c>old-signalled</c>) in its
/// environment, the process that carries out a takeover (the generation, or the agent) says so on standard error and
/// stops itself with SIGSTOP on reaching that point of a takeover that supersedes a generation, once; the test then injects its fault and sends SIGCONT or SIGKILL.
/// Off unless the variable names one of the points exactly; read once, at the first takeover.
/// </summary>
internal static class TestPause
{
    public const string EnvironmentVariable = "SWITCHOVER_TEST_PAUSE_AT";

    /// <summary>The takeover holds the namespace lock and has read the state; nothing is changed yet (no table, no state, no answer).</summary>
    public const string TakeoverBegun = "takeover-begun";

    /// <summary>The kernel committed the takeover's table; the state (with the pending mark) is not yet written; the lock is held.</summary>
    public const string TransactionApplied = "transaction-applied";

    /// <summary>The state says the new generation is active and the lock is released; nobody was told yet (systemd, the agent's client, the old generation).</summary>
    public const string StateWritten = "state-written";

    /// <summary>The previous generations were signalled; the takeover has not returned (the agent has not given its last answer).</summary>
    public const string OldSignalled = "old-signalled";

    private const int SIGSTOP = 19;

    // The constants themselves (not the variable's copy): At compares references.
    private static string? s_point = Environment.GetEnvironmentVariable(EnvironmentVariable) switch
    {
        TakeoverBegun => TakeoverBegun,
        TransactionApplied => TransactionApplied,
        StateWritten => StateWritten,
        OldSignalled => OldSignalled,
        _ => null,
    };

    public static void At(string point)
    {
        if (s_point is null || !ReferenceEquals(Interlocked.CompareExchange(ref s_point, null, point), point))
        {
            return;
        }

        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"switchover: {EnvironmentVariable}={point}: pid {Environment.ProcessId} stops itself (SIGSTOP) until SIGCONT."));
        _ = Libc.Kill(Environment.ProcessId, SIGSTOP);
    }
}
