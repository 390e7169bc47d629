using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;

namespace Switchover.Hosting;

/// <summary>
/// While draining, tells clients to reconnect (they reach the new generation) instead of letting them send a request
/// into a connection that is about to close: HTTP/1.x responses carry <c>Connection: close</c>, HTTP/2 gets GOAWAY,
/// sent the way <see cref="Http2GoAway"/> describes so that no stream is refused. Always (draining or not), marks the
/// start and end of every request on its connection's <see cref="ConnectionActivity"/>, which tells the drain which
/// connections are idle, for how long, and which speak HTTP/2.
/// </summary>
internal sealed class DrainStartupFilter(LocalGeneration generation) : IStartupFilter
{
    // One entry per HTTP/2 connection that got a request while draining; the feature is per connection, shared by its
    // streams, and the entry goes with the connection.
    private readonly ConditionalWeakTable<IConnectionLifetimeNotificationFeature, Http2GoAway> _goAways = new();

    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        app.Use((context, nextMiddleware) =>
        {
            generation.RequestReceived();

            // The connection's activity (set by PrivateListenerFactory; Kestrel's request features fall back to the
            // connection's) tells the drain which connections are idle and for how long.
            if (context.Features.Get<ConnectionActivity>() is not { } activity)
            {
                return Handle(context, nextMiddleware);
            }

            activity.RequestStarted(HttpProtocol.IsHttp2(context.Request.Protocol));
            Task handled;
            try
            {
                handled = Handle(context, nextMiddleware);
            }
            catch
            {
                activity.RequestEnded();
                throw;
            }

            if (handled.IsCompleted)
            {
                activity.RequestEnded();
                return handled;
            }

            return EndAfterAsync(handled, activity);
        });
        next(app);
    };

    private static async Task EndAfterAsync(Task handled, ConnectionActivity activity)
    {
        try
        {
            await handled.ConfigureAwait(false);
        }
        finally
        {
            activity.RequestEnded();
        }
    }

    private Task Handle(HttpContext context, RequestDelegate nextMiddleware)
    {
        if (!generation.Draining)
        {
            return nextMiddleware(context);
        }

        var protocol = context.Request.Protocol;
        if (HttpProtocol.IsHttp11(protocol) || HttpProtocol.IsHttp10(protocol))
        {
            context.Response.Headers.Connection = "close";
            return nextMiddleware(context);
        }

        var lifetime = context.Features.Get<IConnectionLifetimeNotificationFeature>();
        if (lifetime is null)
        {
            return nextMiddleware(context);
        }

        if (!HttpProtocol.IsHttp2(protocol))
        {
            lifetime.RequestClose();
            return nextMiddleware(context);
        }

        var released = _goAways.GetValue(lifetime, l => Http2GoAway.For(l, context)).EnterAsync();
        return released.IsCompleted ? nextMiddleware(context) : RunAfterAsync(released, context, nextMiddleware);
    }

    private static async Task RunAfterAsync(Task released, HttpContext context, RequestDelegate next)
    {
        await released.ConfigureAwait(false);
        await next(context).ConfigureAwait(false);
    }
}

/// <summary>
/// Moves one HTTP/2 connection off a draining generation with GOAWAY, without refusing a stream the client opened or
/// was about to open.
/// <para>
/// Kestrel's <c>RequestClose()</c> sends GOAWAY with the last stream id 2^31-1 while streams are active, and the final
/// GOAWAY (the highest stream id it opened) and close the moment the active count reaches zero: no round trip in between,
/// which RFC 9113 §6.8 asks for, so streams the client opened in flight are refused, or lost with the connection. Worse
/// for a client that does not retry (h2load, and any client that treats REFUSED_STREAM as an error): a client that reads
/// responses and the GOAWAY in one read opens the follow-up requests for those responses first, and its library then
/// refuses them itself, because GOAWAY was received (nghttp2: NGHTTP2_ERR_START_STREAM_NOT_ALLOWED, reported as
/// REFUSED_STREAM).
/// </para>
/// <para>
/// So, from the first request of the connection while draining: requests of this connection are held before the app
/// runs, so no response ends while the client catches up: it reads what it had and sends its follow-ups, which are held
/// too. Once no request has arrived for a quiet window, <c>RequestClose()</c>: its GOAWAY (2^31-1, as our held streams
/// are active) is the next thing the client reads. Then a grace window of at least one round trip, in which requests
/// the client sent before it read the GOAWAY arrive and are accepted. Then the held requests run; their responses come
/// after the GOAWAY, and Kestrel's final GOAWAY refuses nothing.
/// </para>
/// </summary>
internal sealed class Http2GoAway(IConnectionLifetimeNotificationFeature lifetime, TimeSpan quiet, TimeSpan grace, TimeProvider time)
{
    /// <summary>
    /// The least the quiet window lasts: long enough for a client on a busy host to be scheduled, read what it has and
    /// answer it (100 ms was not, once, for h2load on a 2-core host with a load average of 20).
    /// </summary>
    internal static readonly TimeSpan MinimumQuiet = TimeSpan.FromMilliseconds(250);

    /// <summary>The least the grace window lasts: well over a round trip on a LAN, and over a scheduling delay.</summary>
    internal static readonly TimeSpan MinimumGrace = TimeSpan.FromMilliseconds(100);

    /// <summary>The most either window lasts, whatever the connection's round-trip time, so the drain stays short.</summary>
    internal static readonly TimeSpan MaximumWindow = TimeSpan.FromSeconds(1);

    /// <summary>The most the quiet phase lasts for a client that keeps sending requests.</summary>
    internal static readonly TimeSpan MaximumQuietPhase = TimeSpan.FromSeconds(2);

    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastArrival;
    private int _started;

    /// <summary>For a connection: quiet and grace windows of twice its smoothed round-trip time, within the bounds above.</summary>
    public static Http2GoAway For(IConnectionLifetimeNotificationFeature lifetime, HttpContext context)
    {
        var rtt = context.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket ? SmoothedRoundTrip(socket) : null;
        var twice = (rtt ?? TimeSpan.Zero) * 2;
        return new Http2GoAway(lifetime, Clamp(twice, MinimumQuiet), Clamp(twice, MinimumGrace), TimeProvider.System);

        static TimeSpan Clamp(TimeSpan value, TimeSpan minimum) =>
            value < minimum ? minimum : value > MaximumWindow ? MaximumWindow : value;
    }

    /// <summary>The kernel's smoothed RTT of a TCP socket (<c>tcpi_rtt</c> of TCP_INFO), or null when it cannot be read.</summary>
    internal static TimeSpan? SmoothedRoundTrip(Socket socket)
    {
        const int IpProtoTcp = 6, TcpInfo = 11; // <netinet/in.h>, <linux/tcp.h>: the same on every Linux architecture
        const int RttOffset = 68; // struct tcp_info: 8 bytes of u8 fields, then u32 fields; tcpi_rtt (microseconds) is the 16th
        if (!OperatingSystem.IsLinux() || socket.ProtocolType != ProtocolType.Tcp)
        {
            return null;
        }

        Span<byte> info = stackalloc byte[104];
        try
        {
            var length = socket.GetRawSocketOption(IpProtoTcp, TcpInfo, info);
            return length >= RttOffset + 4 ? TimeSpan.FromMicroseconds(MemoryMarshal.Read<uint>(info[RttOffset..])) : null;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or PlatformNotSupportedException)
        {
            return null;
        }
    }

    /// <summary>A request of this connection arrived while draining: completes when it may run.</summary>
    public Task EnterAsync()
    {
        Volatile.Write(ref _lastArrival, time.GetTimestamp());
        if (Interlocked.Exchange(ref _started, 1) == 0)
        {
            _ = GoAwayAsync();
        }

        return _released.Task;
    }

    private async Task GoAwayAsync()
    {
        var began = time.GetTimestamp();
        try
        {
            while (time.GetElapsedTime(began) < MaximumQuietPhase)
            {
                var sinceArrival = time.GetElapsedTime(Volatile.Read(ref _lastArrival));
                if (sinceArrival >= quiet)
                {
                    break;
                }

                await Task.Delay(quiet - sinceArrival, time).ConfigureAwait(false);
            }

            lifetime.RequestClose();
            await Task.Delay(grace, time).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // The connection is gone already; nothing to tell it.
        }
        finally
        {
            _released.TrySetResult();
        }
    }
}
