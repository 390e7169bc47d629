using System.Diagnostics;
using System.Numerics;

namespace Switchover.Lab;

/// <summary>
/// A log-linear histogram of latencies in microseconds, in the manner of HdrHistogram: exact below 256 µs, and above
/// that 128 buckets per power of two, so a recorded value is known to within 1/128 (0.8 %) of itself. Values from 0 to
/// 2^40 µs (about 12 days) fit; larger ones count in the top bucket. Fixed size (about 38 KB), no allocation per value.
/// Not thread-safe: give each worker its own and <see cref="Add"/> them together at the end.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBucketBits = 7;
    private const int SubBucketCount = 1 << SubBucketBits;
    private const int LinearLimit = 2 * SubBucketCount;
    private const int MaxShift = 40 - SubBucketBits;
    internal const int BucketCount = LinearLimit + (MaxShift * SubBucketCount);

    private readonly long[] _counts = new long[BucketCount];
    private long _min = long.MaxValue;
    private long _sum;

    public long Count { get; private set; }

    /// <summary>The smallest value recorded, exactly; 0 when empty.</summary>
    public long Min => Count == 0 ? 0 : _min;

    /// <summary>The largest value recorded, exactly.</summary>
    public long Max { get; private set; }

    public double Mean => Count == 0 ? 0 : (double)_sum / Count;

    public void Record(long microseconds)
    {
        if (microseconds < 0)
        {
            microseconds = 0;
        }

        _counts[IndexOf(microseconds)]++;
        Count++;
        _sum += microseconds;
        if (microseconds < _min)
        {
            _min = microseconds;
        }

        if (microseconds > Max)
        {
            Max = microseconds;
        }
    }

    public void RecordElapsed(long startTimestamp, long endTimestamp) =>
        Record((long)((endTimestamp - startTimestamp) * (1_000_000.0 / Stopwatch.Frequency)));

    public void Add(LatencyHistogram other)
    {
        ArgumentNullException.ThrowIfNull(other);
        for (var i = 0; i < BucketCount; i++)
        {
            _counts[i] += other._counts[i];
        }

        Count += other.Count;
        _sum += other._sum;
        _min = Math.Min(_min, other._min);
        Max = Math.Max(Max, other.Max);
    }

    /// <summary>
    /// The value below or at which <paramref name="percentile"/> percent of the recorded values lie (nearest rank), to
    /// within the bucket precision; clamped to the exact minimum and maximum. 0 when empty.
    /// </summary>
    public long ValueAtPercentile(double percentile)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percentile);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percentile, 100.0);
        if (Count == 0)
        {
            return 0;
        }

        if (percentile >= 100.0)
        {
            return Max;
        }

        var rank = Math.Max(1, (long)Math.Ceiling(percentile / 100.0 * Count));
        long seen = 0;
        for (var i = 0; i < BucketCount; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                var middle = LowestEquivalent(i) + ((HighestEquivalent(i) - LowestEquivalent(i)) / 2);
                return Math.Clamp(middle, Min, Max);
            }
        }

        return Max;
    }

    internal static int IndexOf(long value)
    {
        if (value < LinearLimit)
        {
            return (int)value;
        }

        var shift = 63 - BitOperations.LeadingZeroCount((ulong)value) - SubBucketBits;
        if (shift > MaxShift)
        {
            return BucketCount - 1;
        }

        var mantissa = (int)(value >> shift);
        return LinearLimit + ((shift - 1) * SubBucketCount) + (mantissa - SubBucketCount);
    }

    internal static long LowestEquivalent(int index)
    {
        if (index < LinearLimit)
        {
            return index;
        }

        var k = index - LinearLimit;
        var shift = (k / SubBucketCount) + 1;
        var mantissa = (long)((k % SubBucketCount) + SubBucketCount);
        return mantissa << shift;
    }

    internal static long HighestEquivalent(int index)
    {
        if (index < LinearLimit)
        {
            return index;
        }

        var k = index - LinearLimit;
        var shift = (k / SubBucketCount) + 1;
        var mantissa = (long)((k % SubBucketCount) + SubBucketCount);
        return ((mantissa + 1) << shift) - 1;
    }
}
