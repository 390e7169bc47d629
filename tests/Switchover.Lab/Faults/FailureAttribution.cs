namespace Switchover.Lab;

/// <summary>
/// The time a fault may fail requests: from its injection until the namespace served again, and why it may (a
/// serving process it killed), or null when it killed nothing that served and so may fail no request at all.
/// </summary>
/// <param name="Label">Names the fault in reports, e.g. "round 7: SIGKILL new at took over".</param>
/// <param name="RecoveredUtc">When a live generation held the port again (the invariant held after the repair, or the next deploy took over).</param>
public sealed record FaultWindow(string Label, DateTime InjectedUtc, DateTime RecoveredUtc, string? KilledServing)
{
    /// <summary>A failure this long before the injection counts as the fault's: clocks of the load and the injector differ by a scheduling slice.</summary>
    public static readonly TimeSpan Before = TimeSpan.FromMilliseconds(50);

    /// <summary>A failure this long after the recovery counts as the fault's: requests sent just before it end just after it.</summary>
    public static readonly TimeSpan After = TimeSpan.FromSeconds(1);

    public bool Contains(DateTime timestampUtc) => timestampUtc >= InjectedUtc - Before && timestampUtc <= RecoveredUtc + After;
}

/// <summary>One failed request and the fault window it is attributed to; <see cref="Window"/> null: unattributed.</summary>
public sealed record AttributedFailure(LoadFailure Failure, FaultWindow? Window)
{
    public bool Attributed => Window is not null;
}

/// <summary>
/// Which failed requests a fault explains. Only requests in flight on a killed serving process, or sent while the
/// port still steered to it (the detection delay) and before a live generation held it again, may fail. A failure is
/// attributed when it falls in the window of a fault that killed a serving process; anything else is unattributed,
/// and one unattributed failure is a defect of the handoff (or of the harness). Used by the deterministic fault
/// suite and by the randomized soak.
/// </summary>
public static class FailureAttribution
{
    /// <summary>
    /// Why requests may fail when <paramref name="killedNew"/> and/or <paramref name="killedOld"/> were SIGKILLed,
    /// given whether the new generation already served (it had taken over); null when nothing that served was killed.
    /// Before the takeover only the previous generation serves; from the takeover on the new one serves, and the
    /// previous one drains the connections it still holds.
    /// </summary>
    public static string? KilledServing(bool killedNew, bool killedOld, bool newServes) => (killedNew, killedOld) switch
    {
        (true, true) => "both killed: nothing serves until the next deploy",
        (true, false) => newServes ? "in flight on the new generation (killed) until the previous one rolled back" : null,
        (false, true) => newServes
            ? "in flight on the previous generation (killed) while it drained"
            : "the previous generation, the only one serving, killed before the new one took over",
        _ => null,
    };

    /// <summary>
    /// SIGKILLs the previous generation (first) and/or the new one, and returns why requests may fail now
    /// (<see cref="KilledServing"/>), or null when none may.
    /// </summary>
    public static string? Kill(LabProcess previous, LabProcess next, bool killNew, bool killOld, bool newServes)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(next);
        if (killOld)
        {
            previous.Kill();
        }

        if (killNew)
        {
            next.Kill();
        }

        return KilledServing(killNew, killOld, newServes);
    }

    /// <summary>
    /// Whether <paramref name="next"/> had taken over before it died, from what it left once the namespace settled
    /// (before any repair): its takeover line, the previous generation's notice that it was superseded, the state
    /// recording it active, or a steer of the kernel's table to it. A fault planned "after ready" plus a delay can
    /// land after the takeover: the plan's step alone does not say whether the new generation served.
    /// </summary>
    public static bool TookOver(LabProcess previous, LabProcess next, InvariantReport settled)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(next);
        ArgumentNullException.ThrowIfNull(settled);
        return next.Output.Contains("launch to serving", StringComparison.Ordinal)
               || previous.Output.Contains("drains: listeners stay open", StringComparison.Ordinal)
               || settled.State?.Generations.Any(g => g.Pid == next.Pid && g.State == Switchover.State.GenerationState.Active) == true
               || settled.Steers.Any(s => s.Pid == next.Pid);
    }

    /// <summary>Attributes each failure to the first window that contains it and names a killed serving process.</summary>
    public static IReadOnlyList<AttributedFailure> Attribute(IEnumerable<LoadFailure> failures, IReadOnlyList<FaultWindow> windows)
    {
        ArgumentNullException.ThrowIfNull(failures);
        ArgumentNullException.ThrowIfNull(windows);
        return [.. failures.Select(f => new AttributedFailure(f, windows.FirstOrDefault(w => w.KilledServing is not null && w.Contains(f.TimestampUtc))))];
    }
}
