using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Switchover.Lab;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // Values from <sched.h> and <errno.h>, the same on every Linux architecture .NET runs on.
        internal const int CloneNewNet = 0x40000000;
        internal const int ESRCH = 3;

        /// <summary>setns(2): moves the calling thread (only that thread) into the namespace behind <paramref name="fd"/>.</summary>
        [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
        internal static partial int SetNs(SafeFileHandle fd, int nsType);

        /// <summary>kill(2).</summary>
        [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
        internal static partial int Kill(int pid, int signal);
    }
}
