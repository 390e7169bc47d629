using System.Runtime.InteropServices;

namespace Switchover.VmLab;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // Values from <signal.h> and <errno.h>, the same on every Linux architecture .NET runs on.
        internal const int SigKill = 9;
        internal const int ESRCH = 3;

        /// <summary>kill(2); a negative <paramref name="pid"/> signals that process group.</summary>
        [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
        internal static partial int Kill(int pid, int signal);

        /// <summary>getpgid(2).</summary>
        [LibraryImport("libc", EntryPoint = "getpgid", SetLastError = true)]
        internal static partial int GetPgid(int pid);

        /// <summary>geteuid(2).</summary>
        [LibraryImport("libc", EntryPoint = "geteuid")]
        internal static partial uint GetEuid();
    }
}
