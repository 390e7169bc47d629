using System.Runtime.InteropServices;

namespace Switchover.Migration.Interop;

/// <summary>
/// File descriptors, errno and the calls every other interop file of this assembly builds on. Constants are the
/// generic Linux values, the same on x86_64 and aarch64 (the architectures .NET runs on here); a test pins them.
/// </summary>
internal static partial class Libc
{
    private const string Library = "libc";

    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int EINVAL = 22;
    public const int EMSGSIZE = 90;
    public const int EADDRINUSE = 98;
    public const int EADDRNOTAVAIL = 99;
    public const int ENOBUFS = 105;
    public const int ECONNREFUSED = 111;

    public const int O_RDWR = 0x2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    [LibraryImport(Library, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags);

    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    public static unsafe partial nint Read(int fd, byte* buffer, nuint count);

    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    public static unsafe partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport(Library, EntryPoint = "ioctl", SetLastError = true)]
    public static unsafe partial int Ioctl(int fd, nuint request, void* argument);

    public const int PRIO_PROCESS = 0;

    [LibraryImport(Library, EntryPoint = "gettid")]
    public static partial int GetTid();

    /// <summary>setpriority(2): with PRIO_PROCESS and a thread id, that thread's nice value.</summary>
    [LibraryImport(Library, EntryPoint = "setpriority", SetLastError = true)]
    public static partial int SetPriority(int which, uint who, int priority);

    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint GetEffectiveUserId();

    /// <summary>"Operation not permitted (errno 1)".</summary>
    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}

/// <summary>A file descriptor owned by managed code: a TUN device, a raw socket, an eventfd.</summary>
internal sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor(int fd)
        : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw number, for the packet loops, which hold a reference (DangerousAddRef) while they run.</summary>
    public int Value => handle.ToInt32();

    protected override bool ReleaseHandle() => Libc.Close(handle.ToInt32()) == 0;
}
