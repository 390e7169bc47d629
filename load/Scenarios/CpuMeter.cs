using System.Globalization;

namespace Switchover.Load.Scenarios;

/// <summary>CPU time of the whole machine (/proc/stat) and of one process (/proc/PID/stat), in seconds.</summary>
internal readonly record struct CpuSample(double MachineBusy, double Softirq, double Process)
{
    // USER_HZ: what /proc reports in; 100 on every Linux architecture .NET runs on.
    private const double TicksPerSecond = 100.0;

    public static CpuSample Take(int pid)
    {
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(f => double.Parse(f, CultureInfo.InvariantCulture)).ToArray();
        var busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
        return new CpuSample(busy / TicksPerSecond, fields[6] / TicksPerSecond, ProcessSeconds(pid));
    }

    public static CpuSample operator -(CpuSample end, CpuSample start) =>
        new(end.MachineBusy - start.MachineBusy, end.Softirq - start.Softirq, end.Process - start.Process);

    private static double ProcessSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");

            // After "pid (comm) ": field 3 is the state, so utime (14) and stime (15) are at 11 and 12 from there.
            var rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (double.Parse(rest[11], CultureInfo.InvariantCulture) + double.Parse(rest[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }
}
