using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Tests;

public sealed class HandoffTests : IDisposable
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-test-").FullName;
    private readonly RecordingRunner _runner = new();
    private readonly HashSet<int> _dead = [];

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private Handoff NewHandoff() =>
        new(new StateStore(_root, Echo), new NftClient(_runner), TimeSpan.FromSeconds(5), p => !_dead.Contains(p.Pid));

    private static ProcessIdentity Process(int pid) => new(pid, 7);

    private static PortMapping[] Ports(int privatePort) => [new PortMapping(8080, privatePort)];

    [Fact(Timeout = 10000)]
    public async Task Generations_get_growing_ids_and_the_newest_ready_one_is_active()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var second = (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation;

        var result = await handoff.TakeOverAsync(second.Id, CancellationToken.None);

        Assert.Equal([1L, 2L], new[] { first.Id, second.Id });
        Assert.Equal([first.Id], result.Previous.Select(g => g.Id));
        var state = handoff.Store.ReadUnlocked()!;
        Assert.Equal(GenerationState.Draining, state.Find(1)!.State);
        Assert.Equal(GenerationState.Active, state.Find(2)!.State);
        Assert.Contains("tproxy to :40002", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.Contains("{ 40001, 40002 }", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.All(_runner.Commands, c => Assert.Equal(["-f", "-"], c.Arguments));
    }

    [Fact(Timeout = 10000)]
    public async Task An_older_generation_that_gets_ready_late_steps_aside_for_a_newer_active_one()
    {
        var handoff = NewHandoff();
        var older = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        var newer = (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(newer.Id, CancellationToken.None);
        var applied = _runner.Commands.Count;

        var error = await Assert.ThrowsAsync<SupersededException>(() => handoff.TakeOverAsync(older.Id, CancellationToken.None));

        Assert.Equal(newer.Id, error.Newer.Id);
        Assert.Equal(applied, _runner.Commands.Count);
        Assert.Equal(GenerationState.Active, handoff.Store.ReadUnlocked()!.Find(newer.Id)!.State);
    }

    [Fact(Timeout = 10000)]
    public async Task Dead_generations_are_dropped_and_the_last_to_leave_removes_table_and_state()
    {
        var handoff = NewHandoff();
        var crashed = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(crashed.Id, CancellationToken.None);
        _dead.Add(101);
        var registration = await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None);
        var next = registration.Generation;
        Assert.Equal([101], registration.StaleRemoved.Select(g => g.Pid));

        var result = await handoff.TakeOverAsync(next.Id, CancellationToken.None);
        Assert.Empty(result.Previous);
        Assert.Equal(GenerationState.Starting, next.State);
        Assert.DoesNotContain("40001", _runner.Scripts.Last(), StringComparison.Ordinal);

        Assert.True(await handoff.LeaveAsync(next.Id, CancellationToken.None));
        Assert.Equal(HandoffTable.RenderDelete(Echo), _runner.Scripts.Last());
        Assert.False(Directory.Exists(handoff.Store.Directory));
    }

    [Fact(Timeout = 10000)]
    public async Task An_active_generation_stopped_without_a_successor_steps_down_and_a_superseded_one_does_not()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var second = (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(second.Id, CancellationToken.None);

        Assert.False(await handoff.StepDownAsync(first.Id, CancellationToken.None));
        Assert.Contains("tproxy to :40002", _runner.Scripts.Last(), StringComparison.Ordinal);

        Assert.True(await handoff.StepDownAsync(second.Id, CancellationToken.None));
        Assert.DoesNotContain("redirect", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.Contains("{ 40001, 40002 }", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.Equal(GenerationState.Draining, handoff.Store.ReadUnlocked()!.Find(second.Id)!.State);
    }

    [Fact(Timeout = 10000)]
    public async Task When_nft_fails_the_state_is_unchanged()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var before = File.ReadAllText(handoff.Store.StatePath);
        _runner.Answer = _ => new CommandResult(1, string.Empty, "Error: Could not process rule: Operation not permitted", TimeSpan.Zero);

        var error = await Assert.ThrowsAsync<NftException>(() => handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None));

        Assert.Contains("CAP_NET_ADMIN", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, File.ReadAllText(handoff.Store.StatePath));
    }

    [Fact(Timeout = 10000)]
    public async Task A_corrupt_state_file_is_reported_and_nothing_is_applied()
    {
        var handoff = NewHandoff();
        Directory.CreateDirectory(handoff.Store.Directory);
        File.WriteAllText(handoff.Store.StatePath, "{ not json");

        var error = await Assert.ThrowsAsync<StateException>(() => handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None));

        Assert.Contains("corrupt", error.Message, StringComparison.Ordinal);
        Assert.Contains("switchover cleanup --namespace echo --force", error.Message, StringComparison.Ordinal);
        Assert.Empty(_runner.Commands);
        Assert.Equal("{ not json", File.ReadAllText(handoff.Store.StatePath));
    }

    [Fact(Timeout = 10000)]
    public async Task Cleanup_refuses_while_generations_live_unless_forced()
    {
        var handoff = NewHandoff();
        var live = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(live.Id, CancellationToken.None);
        var applied = _runner.Commands.Count;

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => handoff.CleanupAsync(force: false, CancellationToken.None));
        Assert.Contains("--force", error.Message, StringComparison.Ordinal);
        Assert.Equal(applied, _runner.Commands.Count);

        var left = await handoff.CleanupAsync(force: true, CancellationToken.None);
        Assert.Single(left);
        Assert.False(Directory.Exists(handoff.Store.Directory));
        Assert.Equal(HandoffTable.RenderDelete(Echo), _runner.Scripts.Last());
    }
}
