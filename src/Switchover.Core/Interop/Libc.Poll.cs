using System.Runtime.InteropServices;

namespace Switchover.Interop;

/// <summary>poll(2) on one descriptor: a pidfd becomes readable when its process exits.</summary>
internal static partial class Libc
{
    public const short POLLIN = 0x1;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport(Library, EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int PollNative(PollFd* fds, nuint count, int timeoutMs);

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to become readable.</summary>
    /// <returns>True when it is readable (for a pidfd: the process has exited); false on timeout or EINTR.</returns>
    public static unsafe bool PollReadable(SafeHandle fd, int timeoutMs)
    {
        var added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            var poll = new PollFd { Fd = fd.DangerousGetHandle().ToInt32(), Events = POLLIN };
            var ready = PollNative(&poll, 1, timeoutMs);
            if (ready < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                return errno == EINTR ? false : throw new IOException($"poll failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
            }

            return ready > 0 && (poll.Revents & POLLIN) != 0;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }
}
