using System.Runtime.InteropServices;

namespace Switchover.Hosting.Interop;

/// <summary>CLOCK_MONOTONIC, the clock systemd compares a reload's MONOTONIC_USEC= with.</summary>
internal static partial class MonotonicClock
{
    private const int ClockMonotonic = 1; // <linux/time.h>, the same on every architecture

    /// <summary>Microseconds of CLOCK_MONOTONIC, as sd_notify's MONOTONIC_USEC= wants them.</summary>
    public static unsafe ulong NowMicroseconds()
    {
        Timespec now;
        if (ClockGettime(ClockMonotonic, &now) != 0)
        {
            throw new InvalidOperationException($"clock_gettime(CLOCK_MONOTONIC) failed (errno {Marshal.GetLastPInvokeError()}).");
        }

        return ((ulong)now.Seconds * 1_000_000) + ((ulong)now.Nanoseconds / 1_000);
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime", SetLastError = true)]
    private static unsafe partial int ClockGettime(int clock, Timespec* time);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}
