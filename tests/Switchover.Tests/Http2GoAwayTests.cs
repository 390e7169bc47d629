using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
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
        // Arrivals every quiet/4, so that a delay that oversleeps on a loaded machine (by up to 3/4 of the window)
        // still arrives inside it; with Quiet/2 gaps of 75 ms, an oversleep of 75 ms made this test fail now and then.
        var quiet = TimeSpan.FromMilliseconds(600);
        var clock = Stopwatch.StartNew();
        var lifetime = new RecordingLifetime(clock);
        var goAway = new Http2GoAway(lifetime, quiet, Grace, TimeProvider.System);

        var held = new List<Task> { goAway.EnterAsync() };
        TimeSpan lastArrival = default;
        for (var i = 0; i < 4; i++)
        {
            await Task.Delay(quiet / 4);
            Assert.Equal(0, lifetime.CloseRequests);
            lastArrival = clock.Elapsed;
            held.Add(goAway.EnterAsync());
        }

        await Task.WhenAll(held);

        Assert.True(lifetime.ClosedAt - lastArrival >= quiet - Slack,
            $"GOAWAY was requested {lifetime.ClosedAt - lastArrival} after the last request arrived, within the quiet window of {quiet}.");
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

    private sealed class RecordingLifetime(Stopwatch clock) : IConnectionLifetimeNotificationFeature
    {
        private int _closeRequests;

        public CancellationToken ConnectionClosedRequested { get; set; }

        public int CloseRequests => Volatile.Read(ref _closeRequests);

        /// <summary>When RequestClose was called, on the test's clock.</summary>
        public TimeSpan ClosedAt { get; private set; }

        public void RequestClose()
        {
            ClosedAt = clock.Elapsed;
            Interlocked.Increment(ref _closeRequests);
        }
    }
}
