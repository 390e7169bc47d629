using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Time.Testing;
using Switchover.Hosting;

namespace Switchover.Tests;

public sealed class Http2GoAwayTests
{
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(150);
    private static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(100);

    // Timers may fire a little early by the clock we read; allow for it, never for firing before the window.
    private static readonly TimeSpan Slack = TimeSpan.FromMilliseconds(15);

    [Fact(Timeout = 10000)]
    public async Task The_connection_is_told_to_go_away_after_a_quiet_window_and_its_requests_run_a_grace_window_later()
    {
        var clock = Stopwatch.StartNew();
        var lifetime = new RecordingLifetime(clock);
        var goAway = new Http2GoAway(lifetime, Quiet, Grace, TimeProvider.System);

        var first = goAway.EnterAsync();
        var second = goAway.EnterAsync();
        Assert.False(first.IsCompleted, "A request ran before the connection was told to go away.");
        await Task.WhenAll(first, second);
        var released = clock.Elapsed;

        Assert.Equal(1, lifetime.CloseRequests);
        Assert.True(lifetime.ClosedAt >= Quiet - Slack, $"GOAWAY was requested after {lifetime.ClosedAt}, before the quiet window of {Quiet}.");
        Assert.True(released - lifetime.ClosedAt >= Grace - Slack, $"Held requests ran {released - lifetime.ClosedAt} after GOAWAY, before the grace window of {Grace}.");
    }

    [Fact(Timeout = 10000)]
    public async Task Requests_that_keep_arriving_postpone_the_goaway_until_the_client_is_quiet()
    {
        // On a fake clock: with real delays, an oversleep on a loaded machine (450 ms and more, seen in a full CI run)
        // passed the quiet window between two arrivals. The go-away loop goes on from a fired delay on the thread
        // pool, so the test lets it catch up after each Advance; it reads the fake clock, so when it runs changes nothing.
        var quiet = TimeSpan.FromMilliseconds(600);
        var time = new FakeTimeProvider();
        var start = time.GetTimestamp();
        var lifetime = new RecordingLifetime(() => time.GetElapsedTime(start));
        var goAway = new Http2GoAway(lifetime, quiet, Grace, time);

        var held = new List<Task> { goAway.EnterAsync() };
        for (var i = 0; i < 4; i++)
        {
            time.Advance(quiet / 4);
            await Task.Delay(20);
            Assert.Equal(0, lifetime.CloseRequests);
            held.Add(goAway.EnterAsync());
        }

        // The last arrival was at 600 ms: nothing until a whole quiet window after it, then GOAWAY, then the grace.
        var lastArrival = time.GetElapsedTime(start);
        time.Advance(quiet - TimeSpan.FromMilliseconds(1));
        await Task.Delay(20);
        Assert.Equal(0, lifetime.CloseRequests);
        Assert.All(held, t => Assert.False(t.IsCompleted, "A held request ran before GOAWAY."));
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(SpinWait.SpinUntil(() => lifetime.CloseRequests > 0, TimeSpan.FromSeconds(5)), "No GOAWAY a quiet window after the last arrival.");
        Assert.Equal(1, lifetime.CloseRequests);
        Assert.Equal(quiet, lifetime.ClosedAt - lastArrival);
        time.Advance(Grace);
        await Task.WhenAll(held).WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact(Timeout = 10000)]
    public async Task A_request_that_arrives_after_the_held_ones_ran_runs_at_once_and_asks_for_no_second_goaway()
    {
        var lifetime = new RecordingLifetime(Stopwatch.StartNew());
        var goAway = new Http2GoAway(lifetime, Quiet, Grace, TimeProvider.System);
        await goAway.EnterAsync();

        Assert.True(goAway.EnterAsync().IsCompleted);
        Assert.Equal(1, lifetime.CloseRequests);
    }

    [Fact]
    public void The_round_trip_time_of_a_tcp_connection_is_read_from_the_kernel()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        client.Send("ping"u8);
        server.Receive(new byte[4]);
        server.Send("pong"u8);
        client.Receive(new byte[4]);

        var rtt = Http2GoAway.SmoothedRoundTrip(server);

        Assert.NotNull(rtt);
        Assert.InRange(rtt.Value, TimeSpan.FromTicks(1), TimeSpan.FromSeconds(1));
    }

    [Fact]
    public void A_socket_that_is_not_tcp_has_no_round_trip_time()
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

        Assert.Null(Http2GoAway.SmoothedRoundTrip(udp));
    }

    private sealed class RecordingLifetime(Func<TimeSpan> now) : IConnectionLifetimeNotificationFeature
    {
        private int _closeRequests;

        public RecordingLifetime(Stopwatch clock)
            : this(() => clock.Elapsed)
        {
        }

        public CancellationToken ConnectionClosedRequested { get; set; }

        public int CloseRequests => Volatile.Read(ref _closeRequests);

        /// <summary>When RequestClose was called, on the test's clock.</summary>
        public TimeSpan ClosedAt { get; private set; }

        public void RequestClose()
        {
            ClosedAt = now();
            Interlocked.Increment(ref _closeRequests);
        }
    }
}
