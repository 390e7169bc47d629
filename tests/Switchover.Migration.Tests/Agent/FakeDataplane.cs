using System.Net;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Agent;

/// <summary>A dataplane that moves no packets: the agent's tests control its start, its counters and its failure.</summary>
internal sealed class FakeDataplane(string name, Exception? startFailure = null) : ITunnelDataplane
{
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TunnelOptions Options { get; } = new()
    {
        Name = name,
        Local = IPAddress.Parse("192.0.2.1"),
        Remote = IPAddress.Parse("198.51.100.2"),
        Key = 42,
        FirewallMark = 0x10,
    };

    public GreDataplaneKind Kind => GreDataplaneKind.Userspace;

    public Task Completion => _completion.Task;

    public bool Started { get; private set; }

    public bool Disposed { get; private set; }

    public TunnelCounters Counters { get; set; } = new() { TxPackets = 3, TxBytes = 300, RxPackets = 2, RxBytes = 200, RxStray = 1, RxWrongKey = 4 };

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (startFailure is not null)
        {
            throw startFailure;
        }

        Started = true;
        return Task.CompletedTask;
    }

    public Task<TunnelCounters> GetCountersAsync(CancellationToken cancellationToken) => Task.FromResult(Counters);

    public void Fail(Exception failure) => _completion.TrySetException(failure);

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        _completion.TrySetResult();
        return ValueTask.CompletedTask;
    }
}
