using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab;

/// <summary>
/// A load run in progress, started by <see cref="HttpLoad.Start"/>. It ends at the first of: <see cref="LoadOptions.MaxDuration"/>,
/// <see cref="LoadOptions.MaxRequests"/>, <see cref="StopAsync"/>, or the cancellation token given to Start. The first
/// three let requests in flight finish (each within <see cref="LoadOptions.RequestTimeout"/>); cancellation abandons them
/// (they are counted as <see cref="LoadResult.Abandoned"/>, not as failures). Disposing aborts the run.
/// </summary>
public sealed class LoadRun : IAsyncDisposable
{
    private readonly LoadOptions _options;
    private readonly IReadOnlyList<LoadTarget> _targets;
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly CancellationTokenRegistration _callerRegistration;
    private readonly ITimer _durationTimer;
    private readonly LoadWorker[] _workers;
    private readonly BodyTracker _bodies;
    private readonly ConcurrentQueue<LoadFailure> _failures = new();
    private readonly double _ticksPerRequest;
    private long _started;
    private long _ok;
    private long _failed;
    private long _failuresKept;
    private long _rateSlots;
    private int _stopReason = -1;

    private LoadRun(IReadOnlyList<LoadTarget> targets, LoadOptions options, CancellationToken cancellationToken)
    {
        _targets = targets;
        _options = options;
        StartedUtc = DateTime.UtcNow;
        StartTimestamp = Stopwatch.GetTimestamp();
        _bodies = new BodyTracker(StartTimestamp, StartedUtc);
        _ticksPerRequest = options.RequestsPerSecond is { } rate ? Stopwatch.Frequency / rate : 0;
        _workers = new LoadWorker[targets.Count * options.Concurrency];
        for (var t = 0; t < targets.Count; t++)
        {
            var request = BuildRequest(targets[t], options);
            for (var w = 0; w < options.Concurrency; w++)
            {
                var index = (t * options.Concurrency) + w;
                _workers[index] = new LoadWorker(this, targets[t], options, request, index);
            }
        }

        _durationTimer = TimeProvider.System.CreateTimer(
            static state => ((LoadRun)state!).OnDurationTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _durationTimer.Change(options.MaxDuration, Timeout.InfiniteTimeSpan);
        _callerRegistration = cancellationToken.UnsafeRegister(static state =>
        {
            var run = (LoadRun)state!;
            run.RequestStop(LoadStopReason.Cancelled);
            run.Abort();
        }, this);
        Completion = RunAsync();
    }

    /// <summary>Completes with the result once the run has stopped and every worker has finished.</summary>
    public Task<LoadResult> Completion { get; }

    public DateTime StartedUtc { get; }

    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(StartTimestamp);

    /// <summary>OK requests so far.</summary>
    public long OkRequests => Interlocked.Read(ref _ok);

    /// <summary>Failed requests so far.</summary>
    public long FailedRequests => Interlocked.Read(ref _failed);

    internal long StartTimestamp { get; }

    internal CancellationToken AbortToken => _abort.Token;

    /// <summary>Per distinct body of an OK response so far: how often, first and last seen.</summary>
    public IReadOnlyDictionary<string, BodyTally> GetBodyTallies() => _bodies.Tallies();

    /// <summary>The newest (about 1000) OK responses, oldest first: what the service says right now.</summary>
    public IReadOnlyList<RecentResponse> GetRecentResponses() => _bodies.Recent();

    /// <summary>
    /// Stops starting requests, waits for those in flight and returns the result. If <paramref name="cancellationToken"/>
    /// fires first, requests in flight are abandoned and the result is returned at once.
    /// </summary>
    public async Task<LoadResult> StopAsync(CancellationToken cancellationToken = default)
    {
        RequestStop(LoadStopReason.Stopped);
        using var registration = cancellationToken.UnsafeRegister(static state => ((LoadRun)state!).Abort(), this);
        return await Completion.ConfigureAwait(false);
    }

    /// <summary>Aborts the run if it still runs and waits for its workers to finish.</summary>
    public async ValueTask DisposeAsync()
    {
        RequestStop(LoadStopReason.Stopped);
        Abort();
        await Completion.ConfigureAwait(false);
    }

    internal static LoadRun Start(IReadOnlyList<LoadTarget> targets, LoadOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(options);
        if (targets.Count == 0)
        {
            throw new ArgumentException("At least one load target is needed.", nameof(targets));
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var target in targets)
        {
            ArgumentNullException.ThrowIfNull(target, nameof(targets));
            if (!names.Add(target.Name))
            {
                throw new ArgumentException($"Load target names must be unique; '{target.Name}' is used twice.", nameof(targets));
            }
        }

        var snapshot = options.Snapshot();
        snapshot.Validate();
        return new LoadRun([.. targets], snapshot, cancellationToken);
    }

    /// <summary>Waits for the rate limit, then claims the next request. False: the run is stopping; the worker ends.</summary>
    internal async ValueTask<bool> NextRequestAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return false;
        }

        if (_ticksPerRequest > 0)
        {
            // Slot n is due n/rate seconds after the start; a worker behind schedule goes at once.
            var slot = Interlocked.Increment(ref _rateSlots) - 1;
            var due = StartTimestamp + (long)(slot * _ticksPerRequest);
            var wait = due - Stopwatch.GetTimestamp();
            if (wait > 0)
            {
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency), _stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return false;
                }
            }
        }

        if (Interlocked.Increment(ref _started) > _options.MaxRequests)
        {
            RequestStop(LoadStopReason.MaxRequests);
            return false;
        }

        return !_stop.IsCancellationRequested;
    }

    /// <summary>A worker's pause between requests; false: the run is stopping.</summary>
    internal async ValueTask<bool> IdleAsync(TimeSpan idle)
    {
        try
        {
            await Task.Delay(idle, _stop.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    internal void RecordOk(string target, string body, long timestamp)
    {
        Interlocked.Increment(ref _ok);
        _bodies.Record(target, body, timestamp);
    }

    internal void RecordFailure(string target, RequestOutcome kind, string detail, long timestamp)
    {
        Interlocked.Increment(ref _failed);
        if (Interlocked.Increment(ref _failuresKept) <= _options.MaxRecordedFailures)
        {
            _failures.Enqueue(new LoadFailure(_bodies.ToUtc(timestamp), Stopwatch.GetElapsedTime(StartTimestamp, timestamp), target, kind, detail));
        }
    }

    private static byte[] BuildRequest(LoadTarget target, LoadOptions options)
    {
        if (options.Protocol == LoadProtocol.RawTcp)
        {
            return options.RawRequest.ToArray();
        }

        // IPEndPoint prints IPv6 as [addr]:port, which is what a Host header needs.
        var builder = new StringBuilder()
            .Append("GET ").Append(options.Path).Append(" HTTP/1.1\r\n")
            .Append("Host: ").Append(target.EndPoint).Append("\r\n");
        if (options.Mode == ConnectionMode.NewConnectionPerRequest)
        {
            builder.Append("Connection: close\r\n");
        }

        return Encoding.ASCII.GetBytes(builder.Append("\r\n").ToString());
    }

    private void OnDurationTimer()
    {
        // Timers run on a coarse clock and may fire a little early; the run lasts at least MaxDuration by the stopwatch.
        var remaining = _options.MaxDuration - Elapsed;
        if (remaining > TimeSpan.Zero)
        {
            _durationTimer.Change(remaining + TimeSpan.FromMilliseconds(1), Timeout.InfiniteTimeSpan);
            return;
        }

        RequestStop(LoadStopReason.MaxDuration);
    }

    private void RequestStop(LoadStopReason reason)
    {
        Interlocked.CompareExchange(ref _stopReason, (int)reason, -1);
        try
        {
            _stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The run has already finished.
        }
    }

    private void Abort()
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The run has already finished.
        }
    }

    private async Task<LoadResult> RunAsync()
    {
        var tasks = new Task[_workers.Length];
        for (var i = 0; i < _workers.Length; i++)
        {
            tasks[i] = Task.Run(_workers[i].RunAsync);
        }

        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        finally
        {
            await _durationTimer.DisposeAsync().ConfigureAwait(false);
            await _callerRegistration.DisposeAsync().ConfigureAwait(false);
            foreach (var worker in _workers)
            {
                worker.Dispose();
            }
        }

        return BuildResult(Elapsed);
    }

    private LoadResult BuildResult(TimeSpan duration)
    {
        var latency = new LatencyHistogram();
        var counts = new long[Enum.GetValues<RequestOutcome>().Length];
        var timelineLength = 0;
        long connections = 0, stale = 0, abandoned = 0;
        foreach (var worker in _workers)
        {
            latency.Add(worker.Latency);
            for (var i = 0; i < counts.Length; i++)
            {
                counts[i] += worker.Counts[i];
            }

            timelineLength = Math.Max(timelineLength, worker.TimelineLength);
            connections += worker.ConnectionsOpened;
            stale += worker.StaleConnectionsDiscarded;
            abandoned += worker.Abandoned;
        }

        var timeline = new TimelineSecond[timelineLength];
        for (var second = 0; second < timelineLength; second++)
        {
            long ok = 0, failed = 0;
            foreach (var worker in _workers)
            {
                if (second < worker.TimelineLength)
                {
                    ok += worker.TimelineOk(second);
                    failed += worker.TimelineFailed(second);
                }
            }

            timeline[second] = new TimelineSecond(second, ok, failed);
        }

        var failures = _failures.ToArray();
        Array.Sort(failures, static (a, b) => a.Elapsed.CompareTo(b.Elapsed));
        var byOutcome = new Dictionary<RequestOutcome, long>();
        foreach (var outcome in Enum.GetValues<RequestOutcome>())
        {
            byOutcome[outcome] = counts[(int)outcome];
        }

        var reason = _stopReason < 0 ? LoadStopReason.Stopped : (LoadStopReason)_stopReason;
        return new LoadResult(
            _targets.Select(t => t.ToString()).ToArray(), _options.Mode, _options.Concurrency, StartedUtc, duration, reason, byOutcome, failures,
            Interlocked.Read(ref _failed) - failures.Length,
            _bodies.Tallies(), _bodies.Untallied, _bodies.Recent(), LatencySummary.From(latency), timeline, connections, stale, abandoned)
        {
            Histogram = latency,
        };
    }
}
