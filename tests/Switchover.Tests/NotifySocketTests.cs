using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Switchover.Hosting;
using Switchover.Hosting.Interop;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>What a generation tells systemd, read from a real notification socket (see <see cref="NotifySocket"/>).</summary>
[Collection(nameof(NotifySocketTestGroup))]
public sealed class NotifySocketTests : IDisposable
{
    private const int OldPid = 4101;
    private const int NewPid = 4102;
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");
    private readonly NotifySocket _systemd = new();
    private readonly HashSet<int> _alive = [OldPid, NewPid];

    public void Dispose() => _systemd.Dispose();

    private SystemdNotifications Generation(int pid = NewPid) =>
        new(_systemd.CreateNotifier(), NullLogger.Instance, p => _alive.Contains(p.Pid), pid);

    private static GenerationRecord Record(long id, int pid, GenerationState state) =>
        new(id, pid, 7, state, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40000 + (int)id)], Steering.Tproxy);

    private static NamespaceState State(params GenerationRecord[] generations) =>
        generations.Aggregate(NamespaceState.Empty(Echo), (s, g) => s.With(g)) with { LastGenerationId = generations.Max(g => g.Id) };

    [Fact]
    public void A_first_generation_that_takes_over_sends_its_pid_as_MAINPID_with_READY_in_one_datagram_and_no_reload()
    {
        var generation = Generation();
        var self = Record(1, NewPid, GenerationState.Active);

        generation.Starting(NamespaceState.Empty(Echo));
        generation.TookOver(self, State(self));

        var message = Assert.Single(_systemd.Received());
        Assert.Equal(
            [KeyValuePair.Create("MAINPID", NewPid.ToString(CultureInfo.InvariantCulture)), KeyValuePair.Create("READY", "1"),
             KeyValuePair.Create("STATUS", "generation 1 active, 0 draining")],
            NotifySocket.Fields(message));
    }

    [Fact]
    public void A_generation_that_starts_while_another_serves_frames_its_takeover_as_a_reload()
    {
        var generation = Generation();
        var old = Record(6, OldPid, GenerationState.Active);
        var before = MonotonicClock.NowMicroseconds();

        generation.Starting(State(old, Record(7, NewPid, GenerationState.Starting)));
        var after = MonotonicClock.NowMicroseconds();
        var self = Record(7, NewPid, GenerationState.Active);
        generation.TookOver(self, State(old with { State = GenerationState.Draining }, self));

        var messages = _systemd.Received();
        Assert.Equal(2, messages.Count);
        var reloading = NotifySocket.Fields(messages[0]);
        Assert.Equal(["RELOADING", "MONOTONIC_USEC", "STATUS"], reloading.Select(f => f.Key));
        Assert.Equal("1", reloading[0].Value);
        Assert.InRange(ulong.Parse(reloading[1].Value, CultureInfo.InvariantCulture), before, after);
        Assert.Equal(
            [KeyValuePair.Create("MAINPID", NewPid.ToString(CultureInfo.InvariantCulture)), KeyValuePair.Create("READY", "1"),
             KeyValuePair.Create("STATUS", "generation 7 active, 1 draining")],
            NotifySocket.Fields(messages[1]));
        Assert.True(generation.IsReload);
    }

    [Fact]
    public void A_reload_whose_generation_fails_gives_systemd_READY_again_with_the_pid_of_the_generation_that_still_serves()
    {
        var generation = Generation();
        var old = Record(6, OldPid, GenerationState.Active);
        generation.Starting(State(old));

        generation.DidNotTakeOver("Not ready after 60 s (Switchover:ReadinessTimeout):\nhealth checks report Unhealthy", State(old));

        var messages = _systemd.Received();
        Assert.Equal(2, messages.Count);
        Assert.Equal(
            [KeyValuePair.Create("READY", "1"), KeyValuePair.Create("MAINPID", OldPid.ToString(CultureInfo.InvariantCulture)),
             KeyValuePair.Create("STATUS", "reload failed: Not ready after 60 s (Switchover:ReadinessTimeout):; health checks report Unhealthy")],
            NotifySocket.Fields(messages[1]));
    }

    [Fact]
    public void A_generation_that_fails_outside_a_reload_never_says_READY()
    {
        var generation = Generation();
        generation.Starting(NamespaceState.Empty(Echo));

        generation.DidNotTakeOver("nft was not found", null);

        var message = Assert.Single(_systemd.Received());
        Assert.Equal([KeyValuePair.Create("STATUS", "start failed: nft was not found")], NotifySocket.Fields(message));
    }

    [Fact]
    public void Only_the_last_generation_to_leave_sends_STOPPING_and_one_that_leaves_a_successor_updates_the_status()
    {
        var drained = Generation(OldPid);
        var active = Record(7, NewPid, GenerationState.Active);
        drained.Left(last: false, State(active));
        _alive.Remove(OldPid);
        Generation(NewPid).Left(last: true, null);

        var messages = _systemd.Received();
        Assert.Equal(["STATUS=generation 7 active, 0 draining", "STOPPING=1\nSTATUS=stopped: no generation left"], messages);
    }

    [Fact]
    public void A_dead_active_generation_in_the_state_does_not_make_a_start_a_reload()
    {
        var generation = Generation();
        _alive.Remove(OldPid);

        generation.Starting(State(Record(6, OldPid, GenerationState.Active)));

        Assert.False(generation.IsReload);
        Assert.Empty(_systemd.Received());
    }

    [Fact]
    public void Nothing_is_sent_without_NOTIFY_SOCKET()
    {
        var generation = new SystemdNotifications(NotifySocket.CreateNotifierOutsideSystemd(), NullLogger.Instance, p => true, NewPid);
        var old = Record(6, OldPid, GenerationState.Active);
        var self = Record(7, NewPid, GenerationState.Active);

        generation.Starting(State(old));
        generation.TookOver(self, State(self));
        generation.DidNotTakeOver("no", State(old));
        generation.Left(last: true, null);
        generation.ReadyWithoutHandoff();
        generation.StoppingWithoutHandoff();

        Assert.False(generation.IsEnabled);
        Assert.Empty(_systemd.Received(TimeSpan.FromMilliseconds(500)));
    }

    [Fact]
    public void A_notification_socket_that_is_gone_does_not_stop_the_generation()
    {
        var generation = Generation();
        _systemd.Dispose();

        generation.TookOver(Record(1, NewPid, GenerationState.Active), null);

        Assert.True(generation.IsEnabled);
    }
}
