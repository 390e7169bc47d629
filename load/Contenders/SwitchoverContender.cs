using System.Diagnostics;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Contenders;

/// <summary>Switchover: each handoff is the launch of the new generation; it takes the port over and the old one drains.</summary>
internal sealed class SwitchoverContender : Contender
{
    private readonly SwitchoverService _service;
    private LabProcess? _current;

    public SwitchoverContender(TwoHostLab lab, int port)
        : base(lab, port)
    {
        _service = new SwitchoverService(lab.Server, Artifacts.EchoServer, port);
    }

    public override ContenderKind Kind => ContenderKind.Switchover;

    public override string Description =>
        "samples/EchoServer with UseSwitchover(); each handoff launches the new generation, which takes the port over through " +
        "the nftables redirect once ready; the old one drains and exits by itself";

    public override LabProcess? Current => _current;

    public string Namespace => _service.Name;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        var generation = await _service.DeployAsync("v1", StartTimeout, cancellationToken);
        _current = Track(generation.Process);
    }

    public override async Task<HandoffRecord> HandOffAsync(int version, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        var stopwatch = Stopwatch.StartNew();
        var generation = await _service.DeployAsync($"v{version}", StartTimeout, cancellationToken);
        _current = Track(generation.Process);
        return new HandoffRecord(version, started, started, stopwatch.Elapsed, generation.LaunchToServing, generation.RuleTransaction);
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();

        // The generations have exited: this only removes state a killed one may have left.
        await _service.DisposeAsync();
    }
}
