using System.Diagnostics;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Contenders;

/// <summary>
/// Baseline 2: the new process binds the same port with SO_REUSEPORT while the old one still listens; once it listens,
/// the old one gets SIGTERM. The kernel spreads new connections over both listeners until the old one closes.
/// </summary>
internal sealed class ReusePortOverlap(TwoHostLab lab, int port) : Contender(lab, port)
{
    private LabProcess? _current;

    public override ContenderKind Kind => ContenderKind.ReusePort;

    public override string Description =>
        "tests/Switchover.TestServer (the same echo endpoint) with --ReusePort=true bound directly to the port; each handoff starts " +
        "the new process on the same port with SO_REUSEPORT, waits until it listens, then sends SIGTERM to the old one";

    public override LabProcess? Current => _current;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        _current = LaunchDirect(Artifacts.TestServer, "v1", "--ReusePort=true");
        await WaitUntilListeningAsync(_current, cancellationToken);
    }

    public override async Task<HandoffRecord> HandOffAsync(int version, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        var stopwatch = Stopwatch.StartNew();
        var old = _current ?? throw new InvalidOperationException("Start first.");
        var next = LaunchDirect(Artifacts.TestServer, $"v{version}", "--ReusePort=true");
        await WaitUntilListeningAsync(next, cancellationToken);
        _current = next;
        var took = stopwatch.Elapsed;
        old.SendSignal(Signals.Terminate);
        return new HandoffRecord(version, started, started, took);
    }
}
