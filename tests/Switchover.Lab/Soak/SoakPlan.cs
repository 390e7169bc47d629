using System.Globalization;

namespace Switchover.Lab;

/// <summary>What one round of the soak does to its handoff.</summary>
public enum SoakFault
{
    /// <summary>Nothing: a plain handoff under load.</summary>
    None,

    /// <summary>SIGKILL of the new generation.</summary>
    KillNew,

    /// <summary>SIGKILL of the previous (active) generation.</summary>
    KillOld,

    /// <summary>SIGKILL of both.</summary>
    KillBoth,

    /// <summary>SIGSTOP of the new generation, SIGCONT 5 s later.</summary>
    StopNew,

    /// <summary>The new generation's nft (a Switchover:NftPath shim) refuses every change from the step on.</summary>
    NftRefuses,

    /// <summary>The new generation's nft hangs on every change from the step on (the client kills it after its timeout).</summary>
    NftHangs,

    /// <summary>The state directory (a tmpfs) is remounted read-only from the step on, until the new generation settled.</summary>
    StateReadOnly,

    /// <summary>The state directory's tmpfs is filled up from the step on, until the new generation settled.</summary>
    StateFull,

    /// <summary>A second new generation is launched the delay after the first.</summary>
    TwoDeploys,
}

/// <summary>
/// The moment of a round's handoff after which its fault is injected, as the generations' own log lines mark it;
/// the round's delay is added after the mark.
/// </summary>
public enum SoakStep
{
    /// <summary>Before the new generation is launched (a host fault it meets at its first step).</summary>
    Launch,

    /// <summary>The new generation is recorded Starting, its private ports guarded.</summary>
    Registered,

    /// <summary>The new generation passed its health checks and readiness request; the transaction is next.</summary>
    Ready,

    /// <summary>The new generation took over: transaction applied, state written, the previous one signalled.</summary>
    TookOver,

    /// <summary>The previous generation heard it was superseded and drains, in its rollback window.</summary>
    Draining,
}

/// <summary>One planned round: the fault, the step after which it is injected, and the delay after that step's mark.</summary>
public sealed record SoakRoundPlan(int Round, SoakFault Fault, SoakStep Step, TimeSpan Delay)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"round {Round}: {SoakPlan.Describe(Fault)} at {SoakPlan.Describe(Step)} +{Delay.TotalMilliseconds:0} ms");
}

/// <summary>
/// The soak's plan: one <see cref="Random"/> seeded once decides, round by round, the fault, the step and the delay
/// inside the step, so the same seed gives the same sequence. Only the plan replays: where the fault lands relative
/// to the kernel's and the processes' work depends on the machine's timing.
/// </summary>
public static class SoakPlan
{
    /// <summary>The longest delay after a step's mark.</summary>
    public static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(200);

    private static readonly SoakFault[] Faults = Enum.GetValues<SoakFault>();

    /// <summary>The steps at which a fault can land.</summary>
    public static IReadOnlyList<SoakStep> StepsOf(SoakFault fault) => fault switch
    {
        SoakFault.KillNew or SoakFault.KillOld or SoakFault.KillBoth or SoakFault.StopNew =>
            [SoakStep.Registered, SoakStep.Ready, SoakStep.TookOver, SoakStep.Draining],

        // From the launch the register's change already meets the fault; from "registered" on, the takeover's does.
        SoakFault.NftRefuses or SoakFault.NftHangs or SoakFault.StateReadOnly or SoakFault.StateFull => [SoakStep.Launch, SoakStep.Registered],
        _ => [SoakStep.Launch],
    };

    /// <summary>An endless sequence of rounds from <paramref name="seed"/>: take as many as the soak's bounds allow.</summary>
    public static IEnumerable<SoakRoundPlan> Rounds(int seed)
    {
        var random = new Random(seed);
        for (var round = 1; ; round++)
        {
            var fault = Faults[random.Next(Faults.Length)];
            var steps = StepsOf(fault);
            var step = steps[random.Next(steps.Count)];
            var delay = TimeSpan.FromMilliseconds(random.Next((int)MaxDelay.TotalMilliseconds + 1));
            yield return new SoakRoundPlan(round, fault, step, delay);
        }
    }

    public static string Describe(SoakFault fault) => fault switch
    {
        SoakFault.None => "none",
        SoakFault.KillNew => "SIGKILL new",
        SoakFault.KillOld => "SIGKILL old",
        SoakFault.KillBoth => "SIGKILL both",
        SoakFault.StopNew => "SIGSTOP new 5 s",
        SoakFault.NftRefuses => "nft refuses",
        SoakFault.NftHangs => "nft hangs",
        SoakFault.StateReadOnly => "state read-only",
        SoakFault.StateFull => "state full",
        _ => "two deploys at once",
    };

    public static string Describe(SoakStep step) => step switch
    {
        SoakStep.Launch => "launch",
        SoakStep.Registered => "registered",
        SoakStep.Ready => "ready",
        SoakStep.TookOver => "took over",
        _ => "draining",
    };
}
