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
    public bool Signal(int signal)
    {
        using var pidfd = Libc.TryPidfdOpen(Pid, out var openErrno);
        if (pidfd is not null)
        {
            // The pidfd pins this pid; re-check the start time so that we know it is our process.
            if (!IsAlive())
            {
                return false;
            }

            var errno = Libc.PidfdSendSignal(pidfd, signal);
            return errno == 0 || (errno == Libc.ESRCH ? false : throw SignalFailed(signal, errno));
        }

        if (openErrno == Libc.ESRCH || !IsAlive())
        {
            return false;
        }

        if (Libc.Kill(Pid, signal) == 0)
        {
            return true;
        }

        var killErrno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
        return killErrno == Libc.ESRCH ? false : throw SignalFailed(signal, killErrno);
    }

    private InvalidOperationException SignalFailed(int signal, int errno) =>
        new($"Could not send signal {signal} to pid {Pid} (errno {errno}). " +
            (errno == Libc.EPERM ? "Run every generation as the same user, or as root." : string.Empty));

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
