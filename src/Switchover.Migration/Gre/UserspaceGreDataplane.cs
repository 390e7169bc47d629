using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>The <see cref="ITunnelDataplane"/> face of a <see cref="UserspaceGreTunnel"/>. Lives as long as this process.</summary>
public sealed class UserspaceGreDataplane : ITunnelDataplane
{
    private readonly ICommandRunner _runner;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private UserspaceGreTunnel? _tunnel;

    public UserspaceGreDataplane(TunnelOptions options)
        : this(options, CommandRunner.Instance)
    {
    }

    internal UserspaceGreDataplane(TunnelOptions options, ICommandRunner runner)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        _runner = runner;
    }

    public TunnelOptions Options { get; }

    public GreDataplaneKind Kind => GreDataplaneKind.Userspace;

    public Task Completion => _completion.Task;

    /// <summary>The running tunnel, once started.</summary>
    public UserspaceGreTunnel? Tunnel => _tunnel;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_tunnel is not null)
        {
            throw new InvalidOperationException($"Tunnel {Options.Name} is already started.");
        }

        _tunnel = await UserspaceGreTunnel.StartAsync(Options, _runner, cancellationToken).ConfigureAwait(false);
        _ = ForwardCompletionAsync(_tunnel);
    }

    public Task<TunnelCounters> GetCountersAsync(CancellationToken cancellationToken) =>
        Task.FromResult(_tunnel?.Counters ?? new TunnelCounters());

    public async ValueTask DisposeAsync()
    {
        if (_tunnel is not null)
        {
            await _tunnel.DisposeAsync().ConfigureAwait(false);
        }

        _completion.TrySetResult();
    }

    private async Task ForwardCompletionAsync(UserspaceGreTunnel tunnel)
    {
        try
        {
            await tunnel.Completion.ConfigureAwait(false);
            _completion.TrySetResult();
        }
#pragma warning disable CA1031 // Forwarded to whoever awaits Completion.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _completion.TrySetException(e);
        }
    }
}
