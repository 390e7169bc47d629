using System.Diagnostics;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Contenders;

/// <summary>Baseline 1: stop the old process, wait until it has exited, start the new one on the same port.</summary>
internal sealed class NaiveRestart(TwoHostLab lab, int port) : Contender(lab, port)
{
    private LabProcess? _current;

    public override ContenderKind Kind => ContenderKind.Naive;

    public override string Description =>
        "samples/EchoServer bound directly to the port (Switchover:Mode=Disabled); each handoff sends SIGTERM to the running process, " +
        "waits until it has exited (Kestrel's graceful shutdown), then starts the new one";

    public override LabProcess? Current => _current;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        _current = LaunchDirect(Artifacts.EchoServer, "v1");
        await WaitUntilListeningAsync(_current, cancellationToken);
    }

    public override async Task<HandoffRecord> HandOffAsync(int version, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        var stopwatch = Stopwatch.StartNew();
        var old = _current ?? throw new InvalidOperationException("Start first.");
        old.SendSignal(Signals.Terminate);
        await old.Exited.WaitAsync(StartTimeout, cancellationToken);
        var launched = DateTime.UtcNow;
        _current = LaunchDirect(Artifacts.EchoServer, $"v{version}");
        await WaitUntilListeningAsync(_current, cancellationToken);
        return new HandoffRecord(version, started, launched, stopwatch.Elapsed);
    }
}
