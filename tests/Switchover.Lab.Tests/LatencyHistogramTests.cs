namespace Switchover.Lab.Tests;

public sealed class LatencyHistogramTests
{
    private static readonly double[] Percentiles = [0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Percentiles_match_a_sorted_array_within_one_percent(int seed)
    {
        var random = new Random(seed);

        // Log-uniform from 1 µs to 10 s, plus a few exact small values: both the linear and the logarithmic range.
        var values = new long[100_000];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = i % 10 == 0 ? random.Next(0, 300) : (long)Math.Pow(10, random.NextDouble() * 7);
        }

        var histogram = new LatencyHistogram();
        foreach (var value in values)
        {
            histogram.Record(value);
        }

        Array.Sort(values);
        foreach (var percentile in Percentiles)
        {
            var rank = Math.Max(1, (long)Math.Ceiling(percentile / 100.0 * values.Length));
            var exact = values[rank - 1];
            var measured = histogram.ValueAtPercentile(percentile);
            Assert.True(Math.Abs(measured - exact) <= (exact / 100.0) + 1,
                $"p{percentile}: histogram says {measured} µs, the sorted data {exact} µs");
        }

        Assert.Equal(values[0], histogram.Min);
        Assert.Equal(values[^1], histogram.Max);
        Assert.Equal(values.Length, histogram.Count);
        Assert.Equal(values.Average(), histogram.Mean, 6);
    }

    [Fact]
    public void Merged_per_worker_histograms_equal_one_histogram_of_all_values()
    {
        var random = new Random(7);
        var whole = new LatencyHistogram();
        var parts = new[] { new LatencyHistogram(), new LatencyHistogram(), new LatencyHistogram() };
        for (var i = 0; i < 30_000; i++)
        {
            // Each part sees a different range, so averaging their percentiles would be visibly wrong.
            var part = i % 3;
            var value = (long)(random.NextDouble() * Math.Pow(100, part + 1));
            whole.Record(value);
            parts[part].Record(value);
        }

        var merged = new LatencyHistogram();
        foreach (var part in parts)
        {
            merged.Add(part);
        }

        foreach (var percentile in Percentiles)
        {
            Assert.Equal(whole.ValueAtPercentile(percentile), merged.ValueAtPercentile(percentile));
        }

        Assert.Equal(whole.Count, merged.Count);
        Assert.Equal(whole.Min, merged.Min);
        Assert.Equal(whole.Max, merged.Max);
    }

    [Fact]
    public void Every_value_falls_in_a_bucket_no_wider_than_one_128th_of_it()
    {
        var random = new Random(11);
        var previousIndex = -1;
        for (long value = 0; value < 5000; value++)
        {
            var index = LatencyHistogram.IndexOf(value);
            Assert.InRange(index, previousIndex, previousIndex + 1); // indexes are monotonic and gap-free
            previousIndex = index;
        }

        for (var i = 0; i < 100_000; i++)
        {
            var value = (long)Math.Pow(2, random.NextDouble() * 40);
            var index = LatencyHistogram.IndexOf(value);
            var low = LatencyHistogram.LowestEquivalent(index);
            var high = LatencyHistogram.HighestEquivalent(index);
            Assert.InRange(value, low, high);
            Assert.True(high - low <= value / 128.0, $"{value} is in bucket [{low}, {high}]");
            Assert.Equal(index + 1, LatencyHistogram.IndexOf(high + 1));
        }

        Assert.Equal(LatencyHistogram.BucketCount - 1, LatencyHistogram.IndexOf(long.MaxValue));
    }

    [Fact]
    public void An_empty_histogram_reports_zero()
    {
        var histogram = new LatencyHistogram();
        Assert.Equal(0, histogram.ValueAtPercentile(99));
        Assert.Equal(0, histogram.Min);
        Assert.Equal(0, histogram.Max);
        Assert.Equal(0, histogram.Mean);
    }
}
