using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>Counts a generation's TCP flows as conntrack sees them: in this process, or through the agent.</summary>
internal interface IFlowCounter
{
    Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken);

    /// <summary>The generation's flows whose handshake has not completed: what its drain waits for (see <see cref="ConntrackClient.CountHalfOpenAsync"/>).</summary>
    Task<int> CountHalfOpenAsync(GenerationRecord generation, CancellationToken cancellationToken);
}
