using System.Diagnostics;
using System.Globalization;
using Switchover.Lab;
using Switchover.Load.Contenders;

namespace Switchover.Load.Suite;

/// <summary>What the suite is doing, on standard output, one line per step (handoffs of a run share a line).</summary>
internal sealed class Progress(TextWriter output)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Lock _lock = new();
    private int _handoffsOnLine;

    public TimeSpan Elapsed => _clock.Elapsed;

    public void Line(string text)
    {
        lock (_lock)
        {
            EndHandoffsLocked();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed:mm\\:ss}] {text}"));
            output.Flush();
        }
    }

    public void Handoff(HandoffRecord handoff, LoadRun? load)
    {
        lock (_lock)
        {
            if (_handoffsOnLine == 0)
            {
                output.Write(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed:mm\\:ss}]   handoffs (ms):"));
            }

            output.Write(string.Create(CultureInfo.InvariantCulture, $" v{handoff.Version}:{handoff.Took.TotalMilliseconds:0}"));
            if (load is not null && load.FailedRequests > 0)
            {
                output.Write(string.Create(CultureInfo.InvariantCulture, $"(failed so far {load.FailedRequests})"));
            }

            if (++_handoffsOnLine >= 12)
            {
                EndHandoffsLocked();
            }

            output.Flush();
        }
    }

    public void EndHandoffs()
    {
        lock (_lock)
        {
            EndHandoffsLocked();
        }
    }

    private void EndHandoffsLocked()
    {
        if (_handoffsOnLine > 0)
        {
            output.WriteLine();
            _handoffsOnLine = 0;
        }
    }
}
