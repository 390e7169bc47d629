using System.Runtime.InteropServices;
using System.Text;

using Switchover.Migration.Gre;

namespace Switchover.Migration.Interop;

/// <summary>TUN devices (/dev/net/tun, TUNSETIFF) and setns(2), to create them inside another network namespace.</summary>
internal static partial class Libc
{
    /// <summary>_IOW('T', 202, int).</summary>
    public const uint TUNSETIFF = 0x400454ca;
    public const short IFF_TUN = 0x0001;

    /// <summary>No 4-byte packet information header: each read and write is exactly one IP packet.</summary>
    public const short IFF_NO_PI = 0x1000;

    /// <summary>Each read and write starts with a struct virtio_net_hdr (10 bytes): GSO and checksum offload.</summary>
    public const short IFF_VNET_HDR = 0x4000;

    /// <summary>_IOW('T', 208, unsigned int): the offloads the reader of a TUN device can take (TUN_F_*).</summary>
    public const uint TUNSETOFFLOAD = 0x400454d0;

    /// <summary>The reader completes partial checksums (CHECKSUM_PARTIAL): needed by every other offload.</summary>
    public const uint TUN_F_CSUM = 0x01;
    public const uint TUN_F_TSO4 = 0x02;
    public const uint TUN_F_TSO6 = 0x04;

    /// <summary>UDP segmentation offload (UDP_SEGMENT senders), Linux 6.2 and later.</summary>
    public const uint TUN_F_USO4 = 0x20;
    public const uint TUN_F_USO6 = 0x40;

    /// <summary>IFNAMSIZ, including the terminating NUL.</summary>
    public const int InterfaceNameSize = 16;

    /// <summary>sizeof(struct ifreq): the name, then a union whose first member for TUNSETIFF is short ifr_flags.</summary>
    public const int IfreqSize = 40;

    public const int CLONE_NEWNET = 0x40000000;

    [LibraryImport(Library, EntryPoint = "setns", SetLastError = true)]
    public static partial int SetNs(int fd, int namespaceType);

    /// <summary>
    /// Opens /dev/net/tun and attaches the descriptor to the TUN device <paramref name="name"/> (created if needed; it
    /// lives until the last descriptor closes). Non-blocking, so that the loop can drain a burst after one poll. With
    /// IFF_VNET_HDR every read and write carries a virtio_net_hdr first; what the kernel may then hand over (64 KiB TCP
    /// super-packets, partial checksums) is set with <see cref="SetTunOffload"/>.
    /// </summary>
    public static unsafe FileDescriptor OpenTun(string name, short extraFlags = 0)
    {
        var fd = Open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new TunnelException(
                $"Could not open /dev/net/tun: {Describe(errno)}. " +
                (errno == ENOENT ? "Load the tun module (modprobe tun) or create the device node." : "Run as root or grant CAP_NET_ADMIN."),
                errno);
        }

        var handle = new FileDescriptor(fd);
        var request = stackalloc byte[IfreqSize];
        new Span<byte>(request, IfreqSize).Clear();
        Encoding.ASCII.GetBytes(name, new Span<byte>(request, InterfaceNameSize - 1));
        *(short*)(request + InterfaceNameSize) = (short)(IFF_TUN | IFF_NO_PI | extraFlags);
        if (Ioctl(fd, TUNSETIFF, request) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new TunnelException(
                $"Could not create TUN device '{name}' (ioctl TUNSETIFF): {Describe(errno)}. " + errno switch
                {
                    EBUSY => "A device of that name exists and is in use, or is not a TUN device: choose another name or remove it.",
                    EPERM or EACCES => "Run as root or grant CAP_NET_ADMIN.",
                    _ => "Check the name (at most 15 characters).",
                },
                errno);
        }

        return handle;
    }

    /// <summary>TUNSETOFFLOAD: 0 on success, else errno (EINVAL for a flag this kernel does not know).</summary>
    public static unsafe int SetTunOffload(FileDescriptor tun, uint offloads)
    {
        var added = false;
        try
        {
            tun.DangerousAddRef(ref added);
            return Ioctl(tun.Value, TUNSETOFFLOAD, (void*)(nuint)offloads) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        finally
        {
            if (added)
            {
                tun.DangerousRelease();
            }
        }
    }
}
