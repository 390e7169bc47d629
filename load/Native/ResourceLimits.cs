using System.Runtime.InteropServices;

namespace Switchover.Load.Native;

/// <summary>RLIMIT_NOFILE of this process, which every process it starts (servers, wrk) inherits.</summary>
internal static partial class ResourceLimits
{
    private const int RlimitNoFile = 7; // <sys/resource.h>, the same on every Linux architecture .NET runs on

    /// <summary>Raises the open-file limit (soft and hard) to at least <paramref name="wanted"/>; returns the soft limit now in force.</summary>
    public static ulong RaiseOpenFiles(ulong wanted)
    {
        if (GetRLimit(RlimitNoFile, out var limit) != 0)
        {
            throw new InvalidOperationException($"getrlimit(RLIMIT_NOFILE) failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}.");
        }

        if (limit.Current >= wanted)
        {
            return limit.Current;
        }

        var raised = new RLimit { Current = wanted, Maximum = Math.Max(wanted, limit.Maximum) };
        if (SetRLimit(RlimitNoFile, in raised) != 0)
        {
            // Without CAP_SYS_RESOURCE the hard limit cannot grow: take what it allows.
            raised = new RLimit { Current = limit.Maximum, Maximum = limit.Maximum };
            _ = SetRLimit(RlimitNoFile, in raised);
        }

        _ = GetRLimit(RlimitNoFile, out limit);
        return limit.Current;
    }

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimit(int resource, out RLimit limit);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRLimit(int resource, in RLimit limit);

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }
}
