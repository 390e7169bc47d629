using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Switchover.Migration.Interop;

/// <summary>Raw sockets with batched receive and send (recvmmsg, sendmmsg), and the socket options the tunnel sets.</summary>
internal static partial class Libc
{
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_RAW = 3;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int IPPROTO_GRE = 47;
    public const int IPPROTO_UDP = 17;

    /// <summary>SOL_UDP options (include/uapi/linux/udp.h): the sender's segment size (a cmsg) and the receiver's GRO.</summary>
    public const int SOL_UDP = 17;
    public const int UDP_SEGMENT = 103;
    public const int UDP_GRO = 104;

    public const int SOL_SOCKET = 1;
    public const int SO_SNDBUF = 7;
    public const int SO_ERROR = 4;
    public const int SO_RCVBUF = 8;
    public const int SO_PEERCRED = 17;
    public const int SO_SNDTIMEO = 21;
    public const int SO_SNDBUFFORCE = 32;
    public const int SO_RCVBUFFORCE = 33;
    public const int SO_MARK = 36;

    public const int IPPROTO_IP = 0;
    public const int IP_TTL = 2;

    public const int IPPROTO_IPV6 = 41;
    public const int IPV6_UNICAST_HOPS = 16;

    public const int MSG_TRUNC = 0x20;
    public const int MSG_DONTWAIT = 0x40;

    /// <summary>sizeof(struct sockaddr_in6), the larger of the two socket address structures the tunnel uses.</summary>
    public const int SockaddrStorageSize = 28;

    [LibraryImport(Library, EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Library, EntryPoint = "setsockopt", SetLastError = true)]
    public static unsafe partial int SetSockOpt(int fd, int level, int name, void* value, uint length);

    [LibraryImport(Library, EntryPoint = "getsockopt", SetLastError = true)]
    public static unsafe partial int GetSockOpt(int fd, int level, int name, void* value, uint* length);

    [LibraryImport(Library, EntryPoint = "bind", SetLastError = true)]
    public static unsafe partial int Bind(int fd, byte* address, uint length);

    [LibraryImport(Library, EntryPoint = "connect", SetLastError = true)]
    public static unsafe partial int Connect(int fd, byte* address, uint length);

    [LibraryImport(Library, EntryPoint = "recvmmsg", SetLastError = true)]
    public static unsafe partial int RecvMmsg(int fd, MMsgHdr* messages, uint count, int flags, void* timeout);

    [LibraryImport(Library, EntryPoint = "sendmmsg", SetLastError = true)]
    public static unsafe partial int SendMmsg(int fd, MMsgHdr* messages, uint count, int flags);

    public static unsafe int SetSockOpt(int fd, int level, int name, int value) =>
        SetSockOpt(fd, level, name, &value, sizeof(int));

    /// <summary>
    /// Writes a sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes) for <paramref name="address"/>, port 0, into
    /// <paramref name="destination"/> and returns its length.
    /// </summary>
    public static int WriteSockaddr(IPAddress address, Span<byte> destination) => WriteSockaddr(address, 0, destination);

    /// <summary>The same with a port (in network order in the structure).</summary>
    public static int WriteSockaddr(IPAddress address, ushort port, Span<byte> destination)
    {
        destination[..SockaddrStorageSize].Clear();
        destination[2] = (byte)(port >> 8);
        destination[3] = (byte)port;
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            BitConverter.TryWriteBytes(destination, (ushort)AF_INET);
            address.TryWriteBytes(destination[4..8], out _);
            return 16;
        }

        BitConverter.TryWriteBytes(destination, (ushort)AF_INET6);
        address.TryWriteBytes(destination[8..24], out _);
        BitConverter.TryWriteBytes(destination[24..28], (uint)address.ScopeId);
        return SockaddrStorageSize;
    }
}

/// <summary>struct iovec.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public byte* Base;
    public nuint Length;
}

/// <summary>struct msghdr (LP64: 56 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public byte* Name;
    public uint NameLength;
    public IoVec* Iov;
    public nuint IovLength;
    public void* Control;
    public nuint ControlLength;
    public int Flags;
}

/// <summary>
/// struct cmsghdr (LP64: 16 bytes), followed by its data. A cmsg of up to 8 data bytes takes <see cref="Space8"/>
/// bytes of control buffer (CMSG_SPACE).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CMsgHdr
{
    public const int Size = 16;
    public const int Space8 = Size + 8;

    public nuint Length;
    public int Level;
    public int Type;
}

/// <summary>struct mmsghdr (LP64: 64 bytes): one message of a recvmmsg or sendmmsg batch, and the bytes it carried.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct MMsgHdr
{
    public MsgHdr Header;
    public uint Length;
}
