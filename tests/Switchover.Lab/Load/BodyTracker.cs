using System.Collections.Concurrent;
using System.Diagnostics;

namespace Switchover.Lab;

/// <summary>
/// Tallies the bodies of OK responses, shared by all workers of a run: a count with first and last sighting per
/// distinct body (at most <see cref="MaxDistinctBodies"/> of them), and a ring of the newest responses.
/// </summary>
internal sealed class BodyTracker(long startTimestamp, DateTime startedUtc)
{
    internal const int MaxDistinctBodies = 1000;
    internal const int RecentCapacity = 1024;

    private readonly ConcurrentDictionary<string, Counter> _bodies = new(StringComparer.Ordinal);
    private readonly Entry?[] _recent = new Entry?[RecentCapacity];
    private long _recentSequence;
    private long _untallied;

    /// <summary>OK responses whose body was not tallied because <see cref="MaxDistinctBodies"/> others already were.</summary>
    public long Untallied => Interlocked.Read(ref _untallied);

    public void Record(string target, string body, long timestamp)
    {
        if (!_bodies.TryGetValue(body, out var counter))
        {
            if (_bodies.Count >= MaxDistinctBodies)
            {
                Interlocked.Increment(ref _untallied);
                counter = null;
            }
            else
            {
                counter = _bodies.GetOrAdd(body, static (_, t) => new Counter(t), timestamp);
            }
        }

        counter?.Add(timestamp);
        var sequence = Interlocked.Increment(ref _recentSequence);
        Volatile.Write(ref _recent[sequence & (RecentCapacity - 1)], new Entry(sequence, timestamp, target, body));
    }

    public IReadOnlyDictionary<string, BodyTally> Tallies()
    {
        var tallies = new Dictionary<string, BodyTally>(StringComparer.Ordinal);
        foreach (var (body, counter) in _bodies)
        {
            tallies[body] = new BodyTally(Interlocked.Read(ref counter.Count), ToUtc(counter.First), ToUtc(Interlocked.Read(ref counter.Last)));
        }

        return tallies;
    }

    /// <summary>The newest OK responses, oldest first.</summary>
    public IReadOnlyList<RecentResponse> Recent()
    {
        var entries = new List<Entry>(RecentCapacity);
        for (var i = 0; i < _recent.Length; i++)
        {
            if (Volatile.Read(ref _recent[i]) is { } entry)
            {
                entries.Add(entry);
            }
        }

        entries.Sort(static (a, b) => a.Sequence.CompareTo(b.Sequence));
        return entries.ConvertAll(e => new RecentResponse(ToUtc(e.Timestamp), e.Target, e.Body));
    }

    internal DateTime ToUtc(long timestamp) => startedUtc + Stopwatch.GetElapsedTime(startTimestamp, timestamp);

    private sealed record Entry(long Sequence, long Timestamp, string Target, string Body);

    private sealed class Counter(long timestamp)
    {
        public readonly long First = timestamp;
        public long Count;
        public long Last = timestamp;

        public void Add(long timestamp)
        {
            Interlocked.Increment(ref Count);
            var last = Interlocked.Read(ref Last);
            while (timestamp > last)
            {
                var seen = Interlocked.CompareExchange(ref Last, timestamp, last);
                if (seen == last)
                {
                    return;
                }

                last = seen;
            }
        }
    }
}
