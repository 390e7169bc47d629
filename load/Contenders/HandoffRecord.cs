namespace Switchover.Load.Contenders;

/// <summary>One handoff of a rolling run, as the orchestrator saw it.</summary>
/// <param name="Version">The version that took over (2, 3, ...).</param>
/// <param name="StartedUtc">When the handoff began: the new process launched, or (naive) the old one was told to stop.</param>
/// <param name="LaunchedUtc">When the new process was launched.</param>
/// <param name="Took">From <paramref name="StartedUtc"/> until the new version served (as the contender can tell).</param>
/// <param name="LaunchToServing">Switchover only: as the generation logged it, from its process start to its takeover.</param>
/// <param name="RuleTransaction">Switchover only: the nft transaction, as the generation logged it.</param>
internal sealed record HandoffRecord(
    int Version,
    DateTime StartedUtc,
    DateTime LaunchedUtc,
    TimeSpan Took,
    TimeSpan? LaunchToServing = null,
    TimeSpan? RuleTransaction = null);
