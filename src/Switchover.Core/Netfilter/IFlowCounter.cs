using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>Counts a generation's TCP flows as conntrack sees them: in this process, or through the agent.</summary>
internal interface IFlowCounter
{
    Task<FlowCounts> CountAsync(GenerationRecord generation, CancellationToken cancellationToken);
}
