using System.Runtime.InteropServices;

namespace Switchover.Interop;

/// <summary>
/// What the handoff agent needs beyond .NET's Socket: a descriptor passed with SCM_RIGHTS (sendmsg/recvmsg with a
/// control message), the peer's credentials, groups and pidfd (SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD), raw socket
/// options on a descriptor received from another process, and poll(2) over pidfds.
/// </summary>
internal static partial class Libc
{
    // <asm-generic/socket.h>, <bits/socket.h>, <linux/in.h>, <linux/in6.h>; the same on every architecture .NET runs on.
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int SO_TYPE = 3;
    public const int SO_PEERCRED = 17;
    public const int SO_ACCEPTCONN = 30;
    public const int SO_PROTOCOL = 38;
    public const int SO_DOMAIN = 39;
    public const int SO_PEERGROUPS = 59;
    public const int SO_PEERPIDFD = 77;
    public const int SOL_IP = 0;
    public const int IP_TRANSPARENT = 19;
    public const int SOL_IPV6 = 41;
    public const int IPV6_TRANSPARENT = 75;
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;
    public const int SOCK_STREAM = 1;
    public const int IPPROTO_TCP = 6;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int MSG_CTRUNC = 0x8;
    public const int EAGAIN = 11;
    public const int ERANGE = 34;
    public const int ENOPROTOOPT = 92;

    /// <summary>struct cmsghdr (LP64): size_t len, int level, int type; data follows at 8-byte alignment.</summary>
    private const int CmsgHeaderSize = 16;

    /// <summary>CMSG_SPACE for up to <see cref="MaxDescriptors"/> ints.</summary>
    private const int MaxDescriptors = 4;
    private const int ControlSize = CmsgHeaderSize + MaxDescriptors * sizeof(int);

    [LibraryImport(Library, EntryPoint = "sendmsg", SetLastError = true)]
    private static unsafe partial nint SendMessageNative(int fd, MessageHeader* message, int flags);

    [LibraryImport(Library, EntryPoint = "recvmsg", SetLastError = true)]
    private static unsafe partial nint ReceiveMessageNative(int fd, MessageHeader* message, int flags);

    [LibraryImport(Library, EntryPoint = "getsockopt", SetLastError = true)]
    private static unsafe partial int GetSocketOptionNative(int fd, int level, int name, void* value, uint* length);

    [LibraryImport(Library, EntryPoint = "setsockopt", SetLastError = true)]
    private static unsafe partial int SetSocketOptionNative(int fd, int level, int name, void* value, uint length);

    [LibraryImport(Library, EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int PollManyNative(PollDescriptor* fds, nuint count, int timeoutMilliseconds);

    [LibraryImport(Library, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initialValue, int flags);

    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint WriteNative(int fd, void* buffer, nuint count);

    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint ReadNative(int fd, void* buffer, nuint count);

    /// <summary>
    /// Sends <paramref name="data"/> on a connected Unix stream socket with <paramref name="descriptor"/> attached
    /// (SCM_RIGHTS): the receiver gets its own descriptor of the same open file. Blocks until sent; returns the bytes sent.
    /// </summary>
    public static unsafe int SendWithDescriptor(SafeHandle socket, ReadOnlySpan<byte> data, SafeHandle descriptor)
    {
        var added = false;
        var addedDescriptor = false;
        try
        {
            socket.DangerousAddRef(ref added);
            descriptor.DangerousAddRef(ref addedDescriptor);
            var control = stackalloc byte[CmsgHeaderSize + 8];
            new Span<byte>(control, CmsgHeaderSize + 8).Clear();
            *(nuint*)control = CmsgHeaderSize + sizeof(int);
            *(int*)(control + 8) = SOL_SOCKET;
            *(int*)(control + 12) = SCM_RIGHTS;
            *(int*)(control + CmsgHeaderSize) = descriptor.DangerousGetHandle().ToInt32();
            fixed (byte* bytes = data)
            {
                var iov = new IoVector { Base = bytes, Length = (nuint)data.Length };
                var message = new MessageHeader { Iov = &iov, IovLength = 1, Control = control, ControlLength = CmsgHeaderSize + 8 };
                while (true)
                {
                    var sent = SendMessageNative(socket.DangerousGetHandle().ToInt32(), &message, MSG_NOSIGNAL);
                    if (sent >= 0)
                    {
                        return (int)sent;
                    }

                    var errno = Marshal.GetLastPInvokeError();
                    if (errno != EINTR)
                    {
                        throw new IOException($"sendmsg with SCM_RIGHTS failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
                    }
                }
            }
        }
        finally
        {
            if (addedDescriptor)
            {
                descriptor.DangerousRelease();
            }

            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Receives what is there (without waiting: call after poll says readable) into <paramref name="buffer"/>, and any
    /// descriptors that came with it (close-on-exec). Returns the byte count (0: the peer closed), or -1 when nothing
    /// was there yet.
    /// </summary>
    public static unsafe int ReceiveWithDescriptors(SafeHandle socket, Span<byte> buffer, List<int> descriptors)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            var control = stackalloc byte[ControlSize];
            new Span<byte>(control, ControlSize).Clear();
            fixed (byte* bytes = buffer)
            {
                var iov = new IoVector { Base = bytes, Length = (nuint)buffer.Length };
                var message = new MessageHeader { Iov = &iov, IovLength = 1, Control = control, ControlLength = ControlSize };
                nint received;
                while ((received = ReceiveMessageNative(socket.DangerousGetHandle().ToInt32(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == EAGAIN)
                    {
                        return -1;
                    }

                    if (errno != EINTR)
                    {
                        throw new IOException($"recvmsg failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
                    }
                }

                // One SCM_RIGHTS message at most (we never send more); its length says how many ints it carries.
                if (message.ControlLength >= CmsgHeaderSize)
                {
                    var length = (int)*(nuint*)control;
                    var level = *(int*)(control + 8);
                    var type = *(int*)(control + 12);
                    if (level == SOL_SOCKET && type == SCM_RIGHTS)
                    {
                        for (var offset = CmsgHeaderSize; offset + sizeof(int) <= length; offset += sizeof(int))
                        {
                            descriptors.Add(*(int*)(control + offset));
                        }
                    }
                }

                if ((message.Flags & MSG_CTRUNC) != 0)
                {
                    throw new IOException("recvmsg: more descriptors came than expected; they were discarded.");
                }

                return (int)received;
            }
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>getsockopt into <paramref name="value"/>; returns the length the kernel wrote, or -errno.</summary>
    public static unsafe int GetSocketOption(int fd, int level, int name, Span<byte> value)
    {
        fixed (byte* bytes = value)
        {
            var length = (uint)value.Length;
            return GetSocketOptionNative(fd, level, name, bytes, &length) == 0 ? (int)length : -Marshal.GetLastPInvokeError();
        }
    }

    /// <summary>An int socket option, or null with <paramref name="errno"/> set.</summary>
    public static int? GetSocketOptionInt(int fd, int level, int name, out int errno)
    {
        Span<byte> value = stackalloc byte[sizeof(int)];
        var length = GetSocketOption(fd, level, name, value);
        errno = length < 0 ? -length : 0;
        return length == sizeof(int) ? BitConverter.ToInt32(value) : null;
    }

    /// <summary>Sets an int socket option; returns 0 or the errno.</summary>
    public static unsafe int SetSocketOptionInt(int fd, int level, int name, int value) =>
        SetSocketOptionNative(fd, level, name, &value, sizeof(int)) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>Waits until one of <paramref name="fds"/> is readable; returns the count ready (0 on timeout) or -errno.</summary>
    public static unsafe int Poll(Span<PollDescriptor> fds, int timeoutMilliseconds)
    {
        fixed (PollDescriptor* pointer = fds)
        {
            var ready = PollManyNative(pointer, (nuint)fds.Length, timeoutMilliseconds);
            return ready >= 0 ? ready : -Marshal.GetLastPInvokeError();
        }
    }

    /// <summary>Adds one to an eventfd's counter (wakes its poller).</summary>
    public static unsafe void EventFdSignal(int fd)
    {
        ulong one = 1;
        _ = WriteNative(fd, &one, sizeof(ulong));
    }

    /// <summary>Resets an eventfd's counter (non-blocking eventfd: a no-op when it is zero).</summary>
    public static unsafe void EventFdDrain(int fd)
    {
        ulong value;
        _ = ReadNative(fd, &value, sizeof(ulong));
    }

    [LibraryImport(Library, EntryPoint = "getsockname", SetLastError = true)]
    private static unsafe partial int GetSocketNameNative(int fd, byte* address, uint* length);

    /// <summary>The address a socket is bound to (AF_INET or AF_INET6), or null for another family or an error.</summary>
    public static unsafe System.Net.IPEndPoint? GetSocketName(int fd)
    {
        var buffer = stackalloc byte[128];
        uint length = 128;
        if (GetSocketNameNative(fd, buffer, &length) != 0)
        {
            return null;
        }

        var bytes = new ReadOnlySpan<byte>(buffer, (int)length);
        var family = BitConverter.ToUInt16(bytes);
        var port = (bytes[2] << 8) | bytes[3];
        return family switch
        {
            AF_INET when length >= 16 => new System.Net.IPEndPoint(new System.Net.IPAddress(bytes[4..8]), port),
            AF_INET6 when length >= 28 => new System.Net.IPEndPoint(new System.Net.IPAddress(bytes[8..24], BitConverter.ToUInt32(bytes[24..28])), port),
            _ => null,
        };
    }

    /// <summary>struct iovec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct IoVector
    {
        public byte* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr (LP64: 56 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct MessageHeader
    {
        public byte* Name;
        public uint NameLength;
        public IoVector* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    /// <summary>struct pollfd.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct PollDescriptor
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }
}
