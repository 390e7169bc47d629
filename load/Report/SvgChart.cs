using System.Globalization;
using System.Security;
using System.Text;

namespace Switchover.Load.Report;

/// <summary>One contender's line in a chart: OK and failed requests per second, and when its handoffs began.</summary>
internal sealed record ChartSeries(string Name, string Color, IReadOnlyList<long> OkPerSecond, IReadOnlyList<long> FailedPerSecond, IReadOnlyList<double> HandoffSeconds);

/// <summary>
/// Renders a self-contained SVG: OK requests per second on top (linear), failed requests per second below (log scale, so
/// a handful of failures is as visible as tens of thousands), and a strip with every handoff of every contender between.
/// </summary>
internal static class SvgChart
{
    private const double Width = 1000;
    private const double Left = 70;
    private const double Right = 170;
    private const double TopPanelTop = 40;
    private const double TopPanelHeight = 220;
    private const double StripLane = 14;
    private const double BottomPanelHeight = 150;

    public static string Render(string title, IReadOnlyList<ChartSeries> series)
    {
        ArgumentNullException.ThrowIfNull(series);
        var seconds = Math.Max(1, series.Max(s => Math.Max(s.OkPerSecond.Count, (int)Math.Ceiling(s.HandoffSeconds.DefaultIfEmpty(0).Max()))));
        var plotWidth = Width - Left - Right;
        var stripTop = TopPanelTop + TopPanelHeight + 28;
        var stripHeight = (series.Count * StripLane) + 6;
        var bottomTop = stripTop + stripHeight + 22;
        var height = bottomTop + BottomPanelHeight + 50;
        double X(double second) => Left + (second / seconds * plotWidth);

        var svg = new StringBuilder();
        svg.Append(Inv($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height:0}\" viewBox=\"0 0 {Width} {height:0}\" "))
            .Append("font-family=\"sans-serif\" font-size=\"12\">\n")
            .Append(Inv($"<rect width=\"{Width}\" height=\"{height:0}\" fill=\"white\"/>\n"))
            .Append(Inv($"<text x=\"{Left}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{Escape(title)}</text>\n"));

        // Top panel: OK requests per second.
        var okMax = 4 * NiceCeiling(Math.Max(1, series.SelectMany(s => s.OkPerSecond).DefaultIfEmpty(0).Max()) / 4.0);
        double YOk(double value) => TopPanelTop + TopPanelHeight - (value / okMax * TopPanelHeight);
        Frame(svg, TopPanelTop, TopPanelHeight, plotWidth, "OK requests/s");
        for (var i = 0; i <= 4; i++)
        {
            var value = okMax * i / 4;
            svg.Append(Inv($"<line x1=\"{Left}\" x2=\"{Left + plotWidth}\" y1=\"{YOk(value):0.0}\" y2=\"{YOk(value):0.0}\" stroke=\"#ddd\"/>\n"))
                .Append(Inv($"<text x=\"{Left - 6}\" y=\"{YOk(value) + 4:0.0}\" text-anchor=\"end\">{Short(value)}</text>\n"));
        }

        foreach (var s in series)
        {
            svg.Append(Inv($"<polyline fill=\"none\" stroke=\"{s.Color}\" stroke-width=\"1.6\" points=\""));
            for (var t = 0; t < s.OkPerSecond.Count; t++)
            {
                svg.Append(Inv($"{X(t + 0.5):0.0},{YOk(s.OkPerSecond[t]):0.0} "));
            }

            svg.Append("\"/>\n");
        }

        // Handoff strip: one lane per contender, a tick at the start of each handoff, and a faint line through the panels.
        svg.Append(Inv($"<text x=\"{Left - 6}\" y=\"{stripTop - 6:0.0}\" text-anchor=\"end\" fill=\"#555\">handoffs</text>\n"));
        for (var i = 0; i < series.Count; i++)
        {
            var lane = stripTop + (i * StripLane) + 3;
            svg.Append(Inv($"<line x1=\"{Left}\" x2=\"{Left + plotWidth}\" y1=\"{lane + 5:0.0}\" y2=\"{lane + 5:0.0}\" stroke=\"#eee\"/>\n"));
            foreach (var second in series[i].HandoffSeconds)
            {
                var x = X(second);
                svg.Append(Inv($"<path d=\"M{x:0.0},{lane:0.0} l4,10 l-8,0 z\" fill=\"{series[i].Color}\"/>\n"));
                svg.Append(Inv($"<line x1=\"{x:0.0}\" x2=\"{x:0.0}\" y1=\"{TopPanelTop}\" y2=\"{TopPanelTop + TopPanelHeight}\" stroke=\"{series[i].Color}\" stroke-opacity=\"0.25\" stroke-dasharray=\"3,3\"/>\n"));
                svg.Append(Inv($"<line x1=\"{x:0.0}\" x2=\"{x:0.0}\" y1=\"{bottomTop:0.0}\" y2=\"{bottomTop + BottomPanelHeight:0.0}\" stroke=\"{series[i].Color}\" stroke-opacity=\"0.25\" stroke-dasharray=\"3,3\"/>\n"));
            }
        }

        // Bottom panel: failed requests per second, on log10(1 + n).
        var failedMax = Math.Max(1, series.SelectMany(s => s.FailedPerSecond).DefaultIfEmpty(0).Max());
        var decades = Math.Max(1, Math.Ceiling(Math.Log10(failedMax + 1)));
        double YFailed(double value) => bottomTop + BottomPanelHeight - (Math.Log10(1 + value) / decades * BottomPanelHeight);
        Frame(svg, bottomTop, BottomPanelHeight, plotWidth, "failed requests/s (log)");
        for (var d = 0; d <= decades; d++)
        {
            var value = d == 0 ? 0 : Math.Pow(10, d);
            var y = d == 0 ? YFailed(0) : bottomTop + BottomPanelHeight - (d / decades * BottomPanelHeight);
            svg.Append(Inv($"<line x1=\"{Left}\" x2=\"{Left + plotWidth}\" y1=\"{y:0.0}\" y2=\"{y:0.0}\" stroke=\"#ddd\"/>\n"))
                .Append(Inv($"<text x=\"{Left - 6}\" y=\"{y + 4:0.0}\" text-anchor=\"end\">{Short(value)}</text>\n"));
        }

        // Switchover (the first series) last, so that its line stays visible where it runs along zero with the others.
        foreach (var s in series.Skip(1).Append(series[0]))
        {
            // A step line: each second is a flat segment, so a single bad second shows as a plateau, not a spike between two points.
            svg.Append(Inv($"<polyline fill=\"none\" stroke=\"{s.Color}\" stroke-width=\"1.6\" points=\""));
            for (var t = 0; t < s.FailedPerSecond.Count; t++)
            {
                var y = YFailed(s.FailedPerSecond[t]);
                svg.Append(Inv($"{X(t):0.0},{y:0.0} {X(t + 1):0.0},{y:0.0} "));
            }

            svg.Append("\"/>\n");
        }

        // Time axis under the bottom panel.
        var step = NiceCeiling(seconds / 10.0);
        for (var t = 0.0; t <= seconds + 1e-9; t += step)
        {
            svg.Append(Inv($"<text x=\"{X(t):0.0}\" y=\"{bottomTop + BottomPanelHeight + 16:0.0}\" text-anchor=\"middle\">{t:0}</text>\n"));
        }

        svg.Append(Inv($"<text x=\"{Left + (plotWidth / 2):0.0}\" y=\"{bottomTop + BottomPanelHeight + 34:0.0}\" text-anchor=\"middle\" fill=\"#555\">seconds since the load started</text>\n"));

        // Legend, right of the panels, with each contender's totals.
        for (var i = 0; i < series.Count; i++)
        {
            var y = TopPanelTop + 10 + (i * 44);
            var s = series[i];
            svg.Append(Inv($"<rect x=\"{Width - Right + 14}\" y=\"{y:0}\" width=\"14\" height=\"4\" fill=\"{s.Color}\"/>\n"))
                .Append(Inv($"<text x=\"{Width - Right + 34}\" y=\"{y + 6:0}\" font-weight=\"bold\">{Escape(s.Name)}</text>\n"))
                .Append(Inv($"<text x=\"{Width - Right + 34}\" y=\"{y + 21:0}\" fill=\"#555\">{Short(s.OkPerSecond.Sum())} ok, {Short(s.FailedPerSecond.Sum())} failed</text>\n"))
                .Append(Inv($"<text x=\"{Width - Right + 34}\" y=\"{y + 35:0}\" fill=\"#555\">{s.HandoffSeconds.Count} handoffs</text>\n"));
        }

        return svg.Append("</svg>\n").ToString();
    }

    private static void Frame(StringBuilder svg, double top, double height, double plotWidth, string label) =>
        svg.Append(Inv($"<rect x=\"{Left}\" y=\"{top:0.0}\" width=\"{plotWidth:0.0}\" height=\"{height:0.0}\" fill=\"none\" stroke=\"#999\"/>\n"))
            .Append(Inv($"<text x=\"{Left + 4}\" y=\"{top - 6:0.0}\" fill=\"#555\">{Escape(label)}</text>\n"));

    private static double NiceCeiling(double value)
    {
        var magnitude = Math.Pow(10, Math.Floor(Math.Log10(value)));
        foreach (var factor in new[] { 1, 2, 2.5, 5, 10 })
        {
            if (factor * magnitude >= value)
            {
                return factor * magnitude;
            }
        }

        return 10 * magnitude;
    }

    private static string Short(double value) => value switch
    {
        >= 1_000_000 => Inv($"{value / 1_000_000:0.##}M"),
        >= 10_000 => Inv($"{value / 1000:0}k"),
        >= 1_000 => Inv($"{value / 1000:0.#}k"),
        _ => Inv($"{value:0}"),
    };

    private static string Escape(string text) => SecurityElement.Escape(text);

    private static string Inv(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
