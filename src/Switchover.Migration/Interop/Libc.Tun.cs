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

    /// <summary>IFNAMSIZ, including the terminating NUL.</summary>
    public const int InterfaceNameSize = 16;

    /// <summary>sizeof(struct ifreq): the name, then a union whose first member for TUNSETIFF is short ifr_flags.</summary>
    public const int IfreqSize = 40;

    public const int CLONE_NEWNET = 0x40000000;

    [LibraryImport(Library, EntryPoint = "setns", SetLastError = true)]
    public static partial int SetNs(int fd, int namespaceType);

    /// <summary>
    /// Opens /dev/net/tun and attaches the descriptor to the TUN device <paramref name="name"/> (created if needed; it
    /// lives until the last descriptor closes). Non-blocking, so that the loop can drain a burst after one poll.
    /// </summary>
    public static unsafe FileDescriptor OpenTun(string name)
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
        *(short*)(request + InterfaceNameSize) = IFF_TUN | IFF_NO_PI;
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
}
