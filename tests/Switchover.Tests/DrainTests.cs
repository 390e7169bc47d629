using Microsoft.Extensions.Logging.Abstractions;
using Switchover.Hosting;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

public sealed class DrainTests
{
    private static readonly GenerationRecord Draining =
        new(3, 1, 1, GenerationState.Draining, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 1)], Steering.Tproxy);

    [Fact(Timeout = 10000)]
    public async Task A_shutdown_timeout_during_a_slow_conntrack_dump_ends_the_drain_instead_of_throwing()
    {
        using var shutdown = new CancellationTokenSource();
        var runner = new RecordingRunner
        {
            Answer = _ =>
            {
                shutdown.Cancel();
                throw new OperationCanceledException(shutdown.Token);
            },
        };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(runner), new DrainOptions(), NullLogger.Instance);

        var report = await drain.RunAsync(Draining, shutdown.Token);

        Assert.False(report.ReachedQuiet);
        Assert.Single(runner.Commands);
    }

    [Fact(Timeout = 10000)]
    public async Task With_nothing_arriving_the_drain_ends_after_the_quiet_period()
    {
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(300), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(new RecordingRunner()), options, NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.True(report.ReachedQuiet);
        Assert.InRange(report.Elapsed, options.QuietPeriod, options.MaxDuration);
    }

    [Fact(Timeout = 10000)]
    public async Task Half_open_flows_keep_the_listener_open_until_they_are_gone()
    {
        var halfOpen = 3;
        var runner = new RecordingRunner
        {
            Answer = _ => new Processes.CommandResult(0,
                halfOpen-- > 0 ? "tcp      6 119 SYN_RECV src=192.0.2.2 dst=192.0.2.1 sport=5 dport=8080 src=192.0.2.1 dst=192.0.2.2 sport=1 dport=5 mark=0 use=1\n" : string.Empty,
                string.Empty, TimeSpan.Zero),
        };
        var options = new DrainOptions { QuietPeriod = TimeSpan.FromMilliseconds(200), PollInterval = TimeSpan.FromMilliseconds(50) };
        var drain = new Drain(new LocalGeneration(), new ConntrackClient(runner), options, NullLogger.Instance);

        var report = await drain.RunAsync(Draining, CancellationToken.None);

        Assert.True(report.ReachedQuiet);
        Assert.All(runner.Commands, c => Assert.Equal(["-L", "-p", "tcp", "--mark", "0x00040000/0x00ff0000"], c.Arguments));
        Assert.True(report.Elapsed >= TimeSpan.FromMilliseconds(3 * 50 + 200), $"The drain ended after {report.Elapsed} while flows were half-open.");
    }
}
