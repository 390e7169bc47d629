namespace Switchover.Load.Report;

/// <summary>Percentiles of small samples (handoff timings): nearest rank on the sorted values, no interpolation.</summary>
internal static class Stats
{
    public static double? Percentile(IEnumerable<double> values, double percentile)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0)
        {
            return null;
        }

        var rank = (int)Math.Ceiling(percentile / 100.0 * sorted.Length);
        return sorted[Math.Clamp(rank, 1, sorted.Length) - 1];
    }

    public static double? Max(IEnumerable<double> values)
    {
        var list = values.ToList();
        return list.Count == 0 ? null : list.Max();
    }
}
