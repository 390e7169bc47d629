using Switchover.Migration.Plan;
using Switchover.Processes;

namespace Switchover.Migration.Tests.Plan;

/// <summary>
/// Two migrations set up on one host at the same moment: the host's migration lock plans them one after the other, so
/// the second reads the first's journal and picks the next free mark, route table and link network, and shares the FOU
/// port the first opened. Against the recorded host of <see cref="SharedFouPortTests"/>, whose commands take a while.
/// </summary>
public sealed class HostLockTests : IDisposable
{
    private readonly string _stateRoot = Directory.CreateTempSubdirectory("switchover-hostlock-").FullName;

    public void Dispose() => Directory.Delete(_stateRoot, recursive: true);

    [Fact(Timeout = 60_000)]
    public async Task Setups_of_two_migrations_at_once_get_distinct_marks_tables_and_links_and_one_fou_port()
    {
        var fake = new SharedFouPortTests.FakeHost();
        var host = new MigrationHost(new SlowRunner(fake.Runner), _stateRoot);

        await Task.WhenAll(
            host.SetupAsync(SharedFouPortTests.Spec("ma", "gre-ma", 101), createKernelTunnel: true, dryRun: false, CancellationToken.None),
            host.SetupAsync(SharedFouPortTests.Spec("mb", "gre-mb", 102), createKernelTunnel: true, dryRun: false, CancellationToken.None));

        var a = (await host.ReadAsync(NamespaceName.Parse("ma"), CancellationToken.None))!;
        var b = (await host.ReadAsync(NamespaceName.Parse("mb"), CancellationToken.None))!;
        Assert.NotEqual(a.Mark, b.Mark);
        Assert.NotEqual(a.RouteTable, b.RouteTable);
        Assert.NotEqual(a.ToSpec().LinkAddress, b.ToSpec().LinkAddress);
        Assert.Single(fake.Runner.Lines, l => l == "ip fou add port 4754 ipproto 47");

        await Task.WhenAll(
            host.TeardownAsync(NamespaceName.Parse("ma"), dryRun: false, CancellationToken.None),
            host.TeardownAsync(NamespaceName.Parse("mb"), dryRun: false, CancellationToken.None));
        Assert.Single(fake.Runner.Lines, l => l == "ip fou del port 4754");
        Assert.Empty(fake.FouPorts);
        Assert.False(Directory.Exists(Path.Combine(_stateRoot, MigrationHost.Directory)), "Migration state (or the host lock file) is left after the last teardown.");
    }

    /// <summary>Runs each command after a short wait, one at a time: concurrent setups interleave unless something orders them.</summary>
    private sealed class SlowRunner(RecordingRunner inner) : ICommandRunner
    {
        private readonly Lock _one = new();

        public Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken) =>
            AfterAWhileAsync(() => inner.RunAsync(command, cancellationToken), cancellationToken);

        public Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken) =>
            AfterAWhileAsync(() => inner.TryRunAsync(command, cancellationToken), cancellationToken);

        private async Task<CommandResult> AfterAWhileAsync(Func<Task<CommandResult>> run, CancellationToken cancellationToken)
        {
            await Task.Delay(5, cancellationToken);
            Task<CommandResult> ran;
            lock (_one)
            {
                // The recording runner completes at once, so its work (and its list) stays under the lock.
                ran = run();
            }

            return await ran;
        }
    }
}
