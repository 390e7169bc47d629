using System.Runtime.InteropServices;

namespace Switchover.Interop;

/// <summary>The few libc calls Switchover needs: signals, pidfds, flock, effective uid.</summary>
internal static partial class Libc
{
    private const string Library = "libc";

    public const int SIGKILL = 9;
    public const int SIGUSR2 = 12;
    public const int SIGTERM = 15;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    public const int EINTR = 4;
    public const int ESRCH = 3;
    public const int EPERM = 1;
    public const int EWOULDBLOCK = 11;
    public const int ENOSYS = 38;

    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint GetEffectiveUserId();

    [LibraryImport(Library, EntryPoint = "flock", SetLastError = true)]
    public static partial int Flock(SafeHandle fd, int operation);

    [LibraryImport(Library, EntryPoint = "pidfd_open", SetLastError = true)]
    private static partial int PidfdOpenNative(int pid, uint flags);

    [LibraryImport(Library, EntryPoint = "pidfd_send_signal", SetLastError = true)]
    private static partial int PidfdSendSignalNative(SafePidfdHandle pidfd, int signal, IntPtr info, uint flags);

    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    /// <summary>Opens a pidfd, or returns null when this kernel or libc has none (then fall back to kill with a start-time check).</summary>
    public static SafePidfdHandle? TryPidfdOpen(int pid, out int errno)
    {
        try
        {
            var fd = PidfdOpenNative(pid, 0);
            errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
            return fd < 0 ? null : new SafePidfdHandle(fd);
        }
        catch (EntryPointNotFoundException)
        {
            errno = ENOSYS;
            return null;
        }
    }

    public static int PidfdSendSignal(SafePidfdHandle pidfd, int signal) =>
        PidfdSendSignalNative(pidfd, signal, IntPtr.Zero, 0) == 0 ? 0 : Marshal.GetLastPInvokeError();
}

internal sealed class SafePidfdHandle : SafeHandle
{
    public SafePidfdHandle(int fd)
        : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    protected override bool ReleaseHandle() => Libc.Close(handle.ToInt32()) == 0;
}

internal static partial class Libc
{
    // struct stat begins with st_dev and st_ino (8 bytes each) on x86_64 and aarch64; the whole struct is < 256 bytes.
    private const int StatBufferSize = 256;

    [LibraryImport(Library, EntryPoint = "fstat", SetLastError = true)]
    private static unsafe partial int FstatNative(SafeHandle fd, byte* buffer);

    [LibraryImport(Library, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int StatNative(string path, byte* buffer);

    /// <summary>(device, inode) of an open file, or null on error.</summary>
    public static unsafe (ulong Device, ulong Inode)? FileIdentity(SafeHandle fd)
    {
        var buffer = stackalloc byte[StatBufferSize];
        return FstatNative(fd, buffer) == 0 ? (*(ulong*)buffer, *(ulong*)(buffer + 8)) : null;
    }

    /// <summary>(device, inode) of a path, or null when it does not exist.</summary>
    public static unsafe (ulong Device, ulong Inode)? FileIdentity(string path)
    {
        var buffer = stackalloc byte[StatBufferSize];
        return StatNative(path, buffer) == 0 ? (*(ulong*)buffer, *(ulong*)(buffer + 8)) : null;
    }
}

internal static partial class Libc
{
    private const int O_RDWR = 0x2;
    private const int O_CREAT = 0x40;
    private const int O_CLOEXEC = 0x80000;

    [LibraryImport(Library, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenNative(string path, int flags, uint mode);

    /// <summary>
    /// Opens (creating if needed) a file for flock. Not File.OpenHandle: .NET emulates FileShare with flock on Unix,
    /// which would collide with the lock we take ourselves.
    /// </summary>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle OpenLockFile(string path)
    {
        var fd = OpenNative(path, O_RDWR | O_CREAT | O_CLOEXEC, 0x180 /* 0600 */);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"open failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }

        return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
    }
}

internal static partial class Libc
{
    private const int F_GETFD = 1;
    private const int F_SETFD = 2;
    private const int FD_CLOEXEC = 1;

    [LibraryImport(Library, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlNative(int fd, int command, int argument);

    /// <summary>Marks a descriptor close-on-exec (one a native library opened, or one inherited), so programs this process starts do not inherit it.</summary>
    public static void SetCloseOnExec(int fd)
    {
        var flags = FcntlNative(fd, F_GETFD, 0);
        if (flags >= 0 && (flags & FD_CLOEXEC) == 0)
        {
            FcntlNative(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
}
