using System.Globalization;
using Switchover.Interop;

namespace Switchover.State;

/// <summary>
/// A process as the kernel knows it: pid plus start time (field 22 of /proc/PID/stat, in clock ticks since boot).
/// Pids get reused; the pair does not.
/// </summary>
public sealed record ProcessIdentity(int Pid, ulong StartTime)
{
    public static ProcessIdentity Current { get; } = Read(Environment.ProcessId)
        ?? throw new InvalidOperationException("Cannot read /proc/self/stat: Switchover needs Linux procfs.");

    /// <summary>Reads the identity of a running process, or null when no such process exists.</summary>
    public static ProcessIdentity? Read(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return null;
        }

        return new ProcessIdentity(pid, ParseStartTime(stat));
    }

    /// <summary>
    /// When this process started, as the kernel's clock tick has it (10 ms): now less the time since, which is the
    /// system's uptime (/proc/uptime) less the start time after boot. Read this way so that the launch waterfall needs
    /// no System.Diagnostics.Process (its <c>StartTime</c> reads the same two files).
    /// </summary>
    public DateTime StartedAtUtc()
    {
        var now = DateTime.UtcNow;
        var uptime = File.ReadAllText("/proc/uptime");
        var seconds = double.Parse(uptime.AsSpan(0, uptime.IndexOf(' ', StringComparison.Ordinal)), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture);
        return now - TimeSpan.FromSeconds(seconds - (double)StartTime / UserHz);
    }

    /// <summary>The unit of the times in /proc (USER_HZ): 100 on every architecture Linux and .NET share.</summary>
    private const int UserHz = 100;

    /// <summary>Parses the start time out of a /proc/PID/stat line. The command name may contain spaces and ')'.</summary>
    internal static ulong ParseStartTime(string stat)
    {
        var afterName = stat.LastIndexOf(')');
        if (afterName < 0)
        {
            throw new FormatException("Unexpected /proc/PID/stat format: " + stat);
        }

        // Fields after the name start at field 3 (state); starttime is field 22.
        var fields = stat[(afterName + 2)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return ulong.Parse(fields[22 - 3], NumberStyles.None, CultureInfo.InvariantCulture);
    }

    /// <summary>True while this exact process (not a later one with the same pid) is alive and not a zombie.</summary>
    public bool IsAlive()
    {
        var now = Read(Pid);
        return now is not null && now.StartTime == StartTime && !IsZombie(Pid);
    }

    /// <summary>
    /// Sends a signal to this exact process. Uses a pidfd where the kernel has it, so a reused pid is never hit;
    /// otherwise checks the start time just before kill(2).
    /// </summary>
    /// <returns>True when the signal was delivered, false when the process is gone.</returns>
    /// <exception cref="InvalidOperationException">The kernel refused (EPERM: another user's process); the message says what to do.</exception>
    public bool Signal(int signal)
    {
        var errno = TrySignal(signal);
        return errno switch
        {
            0 => true,
            Libc.ESRCH => false,
            _ => throw new InvalidOperationException(DescribeSignalFailure(signal, errno)),
        };
    }

    /// <summary>
    /// Sends a signal (0: only checks that one could be sent) to this exact process without throwing.
    /// </summary>
    /// <returns>0 when delivered, ESRCH when the process is gone, otherwise the errno (EPERM: another user's process).</returns>
    public int TrySignal(int signal)
    {
        using var pidfd = Libc.TryPidfdOpen(Pid, out var openErrno);
        if (pidfd is not null)
        {
            // The pidfd pins this pid; re-check the start time so that we know it is our process.
            return !IsAlive() ? Libc.ESRCH : Libc.PidfdSendSignal(pidfd, signal);
        }

        if (openErrno == Libc.ESRCH || !IsAlive())
        {
            return Libc.ESRCH;
        }

        return Libc.Kill(Pid, signal) == 0 ? 0 : System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
    }

    /// <summary>What a failed signal means and what to do about it.</summary>
    public string DescribeSignalFailure(int signal, int errno) =>
        $"Could not send signal {signal} to pid {Pid} ({System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}, errno {errno})" +
        (errno == Libc.EPERM
            ? $": it runs as uid {DescribeUid(ReadUid())}, this process as uid {Libc.GetEffectiveUserId()} without CAP_KILL. " +
              "Run every generation of a namespace as the same user, or as root."
            : ".");

    /// <summary>The real uid of this process (from /proc/PID/status), or null when it cannot be read.</summary>
    public uint? ReadUid()
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{Pid.ToString(CultureInfo.InvariantCulture)}/status"))
            {
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                {
                    var fields = line[4..].Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries);
                    return uint.Parse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            // Gone, or not ours to read: the message says "unknown".
        }

        return null;
    }

    private static string DescribeUid(uint? uid) => uid?.ToString(CultureInfo.InvariantCulture) ?? "(unknown)";

    private static bool IsZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
            var afterName = stat.LastIndexOf(')');
            return afterName >= 0 && afterName + 2 < stat.Length && stat[afterName + 2] is 'Z' or 'X';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
