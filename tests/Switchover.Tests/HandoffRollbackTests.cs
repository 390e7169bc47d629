using Switchover.Interop;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>Rollback, repair and signal failures of the handoff protocol, with a recording nft and fake processes.</summary>
public sealed class HandoffRollbackTests : IDisposable
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(30);
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-test-").FullName;
    private readonly RecordingRunner _runner = new();
    private readonly HashSet<int> _dead = [];
    private readonly List<(int Pid, int Signal)> _signals = [];
    private readonly ManualClock _clock = new();
    private Func<int, int, int> _signalAnswer = (_, _) => 0;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private Handoff NewHandoff() =>
        new(new StateStore(_root, Echo), new NftClient(_runner), TimeSpan.FromSeconds(5), p => !_dead.Contains(p.Pid),
            (p, signal) =>
            {
                _signals.Add((p.Pid, signal));
                return _dead.Contains(p.Pid) ? Libc.ESRCH : _signalAnswer(p.Pid, signal);
            },
            _clock);

    private static ProcessIdentity Process(int pid) => new(pid, 7);

    private static PortMapping[] Ports(int privatePort) => [new PortMapping(8080, privatePort)];

    /// <summary>Generation 1 (pid 101, port 40001) served and was superseded by generation 2 (pid 102, port 40002).</summary>
    private async Task<Handoff> TwoGenerationsAsync(TimeSpan firstWindow, int pidBase = 100)
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(pidBase + 1), Ports(40001), Steering.Tproxy, firstWindow, CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var second = (await handoff.RegisterAsync(Process(pidBase + 2), Ports(40002), Steering.Tproxy, Window, CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(second.Id, CancellationToken.None);
        return handoff;
    }

    private static NamespaceState State(Handoff handoff) => handoff.Store.ReadUnlocked()!;

    [Fact(Timeout = 10000)]
    public async Task A_superseded_generation_is_a_rollback_target_until_its_window_ends()
    {
        var handoff = await TwoGenerationsAsync(Window);

        var first = State(handoff).Find(1)!;
        Assert.Equal(GenerationState.Draining, first.State);
        Assert.Equal(_clock.GetUtcNow() + Window, first.RollbackUntil);
        Assert.True(first.CanRollBackTo(_clock.GetUtcNow()));
        Assert.False(first.CanRollBackTo(_clock.GetUtcNow() + Window));
        Assert.Null(State(handoff).Find(2)!.RollbackUntil);
    }

    [Fact(Timeout = 10000)]
    public async Task A_generation_with_a_rollback_window_hears_SIGUSR2_when_superseded_and_one_from_before_it_SIGTERM()
    {
        await TwoGenerationsAsync(Window);
        Assert.Contains((101, Libc.SIGUSR2), _signals);

        var handoff = NewHandoff();
        var old = (await handoff.RegisterAsync(Process(201), Ports(40011), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(old.Id, CancellationToken.None);
        var next = (await handoff.RegisterAsync(Process(202), Ports(40012), Steering.Tproxy, Window, CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(next.Id, CancellationToken.None);

        Assert.Contains((201, Libc.SIGTERM), _signals);
        Assert.DoesNotContain(_signals, s => s.Pid == 201 && s.Signal == Libc.SIGUSR2);
    }

    [Fact(Timeout = 10000)]
    public async Task A_takeover_asked_again_after_its_commit_tells_the_previous_generation_again_and_changes_nothing_else()
    {
        // What the agent's client does when the agent died after writing the state and before signalling.
        var handoff = await TwoGenerationsAsync(Window);
        var before = State(handoff);
        _signals.Clear();

        var again = await handoff.TakeOverAsync(2, CancellationToken.None);

        Assert.Equal([(101, Libc.SIGUSR2)], _signals);
        Assert.Equal([1L], again.Previous.Select(g => g.Id));
        Assert.Equal(GenerationState.Active, again.Generation.State);
        var after = State(handoff);
        Assert.Equal(before.Generations.Select(g => (g.Id, g.State, g.RollbackUntil)), after.Generations.Select(g => (g.Id, g.State, g.RollbackUntil)));
    }

    [Fact(Timeout = 10000)]
    public async Task When_the_new_generation_is_dead_the_previous_one_takes_the_ports_back_in_one_transaction()
    {
        var handoff = await TwoGenerationsAsync(Window);
        _dead.Add(102);
        var applied = _runner.Commands.Count;

        var result = await handoff.RollbackAsync(1, CancellationToken.None);

        Assert.Equal(RollbackOutcome.RolledBack, result.Outcome);
        Assert.Equal(1, result.Active!.Id);
        Assert.Equal(2, result.From!.Id);
        Assert.Equal([2L], result.StaleRemoved.Select(g => g.Id));
        var state = State(handoff);
        Assert.Equal([1L], state.Generations.Select(g => g.Id));
        Assert.Equal(GenerationState.Active, state.Find(1)!.State);
        Assert.Null(state.Find(1)!.RollbackUntil);
        Assert.Single(_runner.Commands.Skip(applied));
        var script = _runner.Scripts.Last();
        Assert.Contains("tproxy to :40001", script, StringComparison.Ordinal);
        Assert.DoesNotContain("40002", script, StringComparison.Ordinal);
        Assert.DoesNotContain(_signals, s => s.Pid == 102 && s.Signal == Libc.SIGTERM);
    }

    [Fact(Timeout = 10000)]
    public async Task A_repeated_rollback_finds_the_generation_active_and_changes_nothing()
    {
        var handoff = await TwoGenerationsAsync(Window);
        _dead.Add(102);
        await handoff.RollbackAsync(1, CancellationToken.None);
        var applied = _runner.Commands.Count;
        var written = File.ReadAllText(handoff.Store.StatePath);

        var again = await handoff.RollbackAsync(1, CancellationToken.None);

        Assert.Equal(RollbackOutcome.AlreadyActive, again.Outcome);
        Assert.Null(again.Ruleset);
        Assert.Equal(applied, _runner.Commands.Count);
        Assert.Equal(written, File.ReadAllText(handoff.Store.StatePath));
    }

    [Fact(Timeout = 10000)]
    public async Task While_the_new_generation_lives_a_rollback_is_not_needed_unless_forced()
    {
        var handoff = await TwoGenerationsAsync(Window);
        var applied = _runner.Commands.Count;

        var unforced = await handoff.RollbackAsync(1, CancellationToken.None);
        Assert.Equal(RollbackOutcome.NotNeeded, unforced.Outcome);
        Assert.Contains("generation 2 (pid 102) is alive", unforced.Reason, StringComparison.Ordinal);
        Assert.Equal(applied, _runner.Commands.Count);

        var forced = await handoff.RollbackAsync(1, force: true, from: null, CancellationToken.None);

        Assert.Equal(RollbackOutcome.RolledBack, forced.Outcome);
        var state = State(handoff);
        Assert.Equal(GenerationState.Active, state.Find(1)!.State);
        Assert.Equal(GenerationState.Draining, state.Find(2)!.State);
        Assert.Null(state.Find(2)!.RollbackUntil);
        Assert.Contains("tproxy to :40001", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.Contains((102, Libc.SIGUSR2), _signals);
    }

    [Fact(Timeout = 10000)]
    public async Task A_forced_rollback_judged_against_one_generation_leaves_a_newer_one_alone()
    {
        var handoff = await TwoGenerationsAsync(Window);
        var third = (await handoff.RegisterAsync(Process(103), Ports(40003), Steering.Tproxy, Window, CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(third.Id, CancellationToken.None);

        var result = await handoff.RollbackAsync(1, force: true, from: 2, CancellationToken.None);

        Assert.Equal(RollbackOutcome.NotNeeded, result.Outcome);
        Assert.Equal(GenerationState.Active, State(handoff).Find(3)!.State);
    }

    [Fact(Timeout = 10000)]
    public async Task No_rollback_to_a_generation_past_its_window_or_without_one()
    {
        var handoff = await TwoGenerationsAsync(Window);
        _dead.Add(102);
        _clock.Advance(Window);

        var late = await handoff.RollbackAsync(1, CancellationToken.None);
        Assert.Equal(RollbackOutcome.NotPossible, late.Outcome);
        Assert.Contains("rollback window ended", late.Reason, StringComparison.Ordinal);

        var noWindow = await TwoGenerationsAsync(TimeSpan.Zero, pidBase: 200);
        var refused = await noWindow.RollbackAsync(3, CancellationToken.None);
        Assert.Equal(RollbackOutcome.NotPossible, refused.Outcome);
        Assert.Contains("not a rollback target", refused.Reason, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task Repair_gives_the_ports_of_a_dead_active_generation_to_the_newest_previous_one_in_its_window()
    {
        var handoff = await TwoGenerationsAsync(Window);
        var third = (await handoff.RegisterAsync(Process(103), Ports(40003), Steering.Tproxy, Window, CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(third.Id, CancellationToken.None);
        _dead.Add(103);

        var result = await handoff.RepairAsync(CancellationToken.None);

        Assert.Equal(2, result.Promoted!.Id);
        Assert.Equal(2, result.Active!.Id);
        Assert.True(result.Applied);
        Assert.Equal([3L], result.StaleRemoved.Select(g => g.Id));
        var state = State(handoff);
        Assert.Equal(GenerationState.Active, state.Find(2)!.State);
        Assert.Equal(GenerationState.Draining, state.Find(1)!.State);
        Assert.Contains("tproxy to :40002", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.Contains("{ 40001, 40002 }", _runner.Scripts.Last(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task An_active_generation_that_stepped_down_and_then_exited_is_not_replaced_by_a_rollback_target()
    {
        var handoff = await TwoGenerationsAsync(Window);
        Assert.True(await handoff.StepDownAsync(2, CancellationToken.None));
        _dead.Add(102);

        var result = await handoff.RepairAsync(CancellationToken.None);

        Assert.Null(result.Promoted);
        Assert.Null(result.Active);
        Assert.DoesNotContain("tproxy", _runner.Scripts.Last(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task Repair_with_no_rollback_target_leaves_the_ports_unsteered_and_no_guard_of_the_dead()
    {
        var handoff = await TwoGenerationsAsync(Window);
        _dead.Add(102);
        _clock.Advance(Window + TimeSpan.FromSeconds(1));

        var result = await handoff.RepairAsync(CancellationToken.None);

        Assert.Null(result.Active);
        Assert.Null(result.Promoted);
        var script = _runner.Scripts.Last();
        Assert.DoesNotContain("tproxy", script, StringComparison.Ordinal);
        Assert.DoesNotContain("40002", script, StringComparison.Ordinal);
        Assert.Contains("{ 40001 }", script, StringComparison.Ordinal);
        Assert.Null(State(handoff).Active);
    }

    [Fact(Timeout = 10000)]
    public async Task Repair_of_a_namespace_whose_generations_all_died_removes_table_and_state()
    {
        var handoff = await TwoGenerationsAsync(Window);
        _dead.UnionWith([101, 102]);

        var result = await handoff.RepairAsync(CancellationToken.None);

        Assert.True(result.NamespaceRemoved);
        Assert.Equal(HandoffTable.RenderDelete(Echo), _runner.Scripts.Last());
        Assert.False(handoff.Store.Exists);
    }

    [Fact(Timeout = 10000)]
    public async Task Repair_of_a_healthy_namespace_applies_nothing()
    {
        var handoff = await TwoGenerationsAsync(Window);
        var applied = _runner.Commands.Count;

        var result = await handoff.RepairAsync(CancellationToken.None);

        Assert.False(result.Applied);
        Assert.Equal(2, result.Active!.Id);
        Assert.Equal(applied, _runner.Commands.Count);
    }

    [Fact(Timeout = 10000)]
    public async Task A_generation_that_ended_its_window_is_never_promoted_and_one_rolled_back_to_learns_it_is_active()
    {
        var handoff = await TwoGenerationsAsync(Window);
        Assert.Equal(GenerationState.Draining, await handoff.EndRollbackWindowAsync(1, CancellationToken.None));
        _dead.Add(102);
        Assert.Null((await handoff.RepairAsync(CancellationToken.None)).Promoted);

        var again = await TwoGenerationsAsync(Window, pidBase: 200);
        await again.RollbackAsync(3, force: true, from: null, CancellationToken.None);
        Assert.Equal(GenerationState.Active, await again.EndRollbackWindowAsync(3, CancellationToken.None));
    }

    [Fact(Timeout = 10000)]
    public async Task A_signal_that_fails_after_the_swap_leaves_the_new_generation_active_and_is_recorded_until_a_retry_gets_through()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var second = (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation;
        _signalAnswer = (pid, signal) => pid == 101 && signal == Libc.SIGTERM ? Libc.EPERM : 0;

        var result = await handoff.TakeOverAsync(second.Id, CancellationToken.None);

        var failure = Assert.Single(result.SignalFailures);
        Assert.Equal(1, failure.Generation.Id);
        Assert.Equal(Libc.EPERM, failure.Errno);
        Assert.Contains("same user", failure.Error, StringComparison.Ordinal);
        var state = State(handoff);
        Assert.Equal(GenerationState.Active, state.Find(2)!.State);
        Assert.Contains("same user", state.Find(1)!.SignalError, StringComparison.Ordinal);
        Assert.Contains("tproxy to :40002", _runner.Scripts.Last(), StringComparison.Ordinal);

        _signalAnswer = (_, _) => 0;
        Assert.Null(await handoff.SignalToDrainAsync(1, CancellationToken.None));
        Assert.Null(State(handoff).Find(1)!.SignalError);
    }

    [Fact(Timeout = 10000)]
    public async Task A_generation_that_could_not_signal_the_live_ones_is_refused_before_anything_changes()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var applied = _runner.Commands.Count;
        _signalAnswer = (pid, signal) => pid == 101 ? Libc.EPERM : 0;

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None));

        Assert.Contains("Generation 1 of namespace 'echo'", error.Message, StringComparison.Ordinal);
        Assert.Contains("same user", error.Message, StringComparison.Ordinal);
        Assert.Equal(applied, _runner.Commands.Count);
        Assert.Equal([1L], State(handoff).Generations.Select(g => g.Id));
    }

    [Fact(Timeout = 10000)]
    public async Task When_nft_dies_after_the_kernel_committed_the_previous_table_is_put_back()
    {
        var handoff = NewHandoff();
        var first = (await handoff.RegisterAsync(Process(101), Ports(40001), CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, CancellationToken.None);
        var second = (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation;
        var before = HandoffTable.FromState(Echo, State(handoff)).Render();
        // The first nft run is the takeover's: it exits 137 as if killed once the kernel committed; the restore works.
        var runs = 0;
        _runner.Answer = _ => ++runs == 1 ? new CommandResult(137, string.Empty, string.Empty, TimeSpan.Zero) : Ok();

        await Assert.ThrowsAsync<NftException>(() => handoff.TakeOverAsync(second.Id, CancellationToken.None));

        Assert.Equal(before, _runner.Scripts.Last());
        Assert.False(State(handoff).TransactionPending);
        Assert.Equal(GenerationState.Active, State(handoff).Find(1)!.State);
    }

    [Fact(Timeout = 10000)]
    public async Task An_interrupted_transaction_is_applied_again_by_the_next_operation_before_anything_else()
    {
        var handoff = await TwoGenerationsAsync(Window);
        var third = (await handoff.RegisterAsync(Process(103), Ports(40003), Steering.Tproxy, Window, CancellationToken.None)).Generation;
        _runner.Answer = _ => new CommandResult(137, string.Empty, string.Empty, TimeSpan.Zero);
        await Assert.ThrowsAsync<NftException>(() => handoff.TakeOverAsync(third.Id, CancellationToken.None));
        Assert.True(State(handoff).TransactionPending);
        _runner.Answer = _ => Ok();
        var applied = _runner.Commands.Count;

        // A step that changes nothing in the table still puts the state's table in place first.
        Assert.False(await handoff.StepDownAsync(1, CancellationToken.None));

        Assert.Equal(applied + 1, _runner.Commands.Count);
        Assert.Equal(HandoffTable.FromState(Echo, State(handoff)).Render(), _runner.Scripts.Last());
        Assert.Contains("tproxy to :40002", _runner.Scripts.Last(), StringComparison.Ordinal);
        Assert.False(State(handoff).TransactionPending);
    }

    [Fact(Timeout = 10000)]
    public async Task Live_generations_of_an_earlier_version_that_kept_state_by_name_only_are_refused_with_what_to_do()
    {
        var legacy = Path.Combine(_root, "echo");
        Directory.CreateDirectory(legacy);
        var old = NamespaceState.Empty(Echo).With(new GenerationRecord(1, 101, 7, GenerationState.Active, DateTimeOffset.UnixEpoch, Ports(40001)));
        File.WriteAllText(Path.Combine(legacy, "state.json"), System.Text.Json.JsonSerializer.Serialize(old, SerializerJsonContext.Default.NamespaceState));
        var handoff = NewHandoff();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None));

        Assert.Contains("earlier Switchover version", error.Message, StringComparison.Ordinal);
        Assert.Contains("pid 101", error.Message, StringComparison.Ordinal);
        Assert.Empty(_runner.Commands);

        _dead.Add(101);
        Assert.Equal(1, (await handoff.RegisterAsync(Process(102), Ports(40002), CancellationToken.None)).Generation.Id);
    }

    private static CommandResult Ok() => new(0, string.Empty, string.Empty, TimeSpan.Zero);

    private sealed class ManualClock : TimeProvider
    {
        private DateTimeOffset _now = new(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => _now;

        public void Advance(TimeSpan by) => _now += by;
    }
}
