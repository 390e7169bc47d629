using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Switchover.Lab;
using Switchover.Migration.Interop;

namespace Switchover.Migration.Tests.Integration;

/// <summary>
/// A raw IPPROTO_GRE socket inside a namespace, bound to a source address, that sends crafted GRE packets. .NET's
/// Socket refuses protocol 47 ("Protocol not supported"), so this one is made with socket(2) directly.
/// </summary>
internal sealed partial class RawGreSocket : IDisposable
{
    private readonly FileDescriptor _fd;

    private RawGreSocket(FileDescriptor fd) => _fd = fd;

    public static async Task<RawGreSocket> OpenAsync(NetworkNamespace ns, IPAddress source)
    {
        var fd = await NetworkNamespaceEntry.RunAsync(ns.Name, () =>
            Libc.Socket(source.AddressFamily == AddressFamily.InterNetwork ? Libc.AF_INET : Libc.AF_INET6,
                Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, Libc.IPPROTO_GRE));
        Assert.True(fd >= 0, $"socket(raw, 47) failed: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        var socket = new RawGreSocket(new FileDescriptor(fd));
        var address = new byte[Libc.SockaddrStorageSize];
        var length = Libc.WriteSockaddr(source, address);
        unsafe
        {
            fixed (byte* a = address)
            {
                Assert.True(Libc.Bind(fd, a, (uint)length) == 0, $"bind {source}: {Libc.Describe(Marshal.GetLastPInvokeError())}");
            }
        }

        return socket;
    }

    /// <summary>Sends one GRE packet (header and payload; the kernel adds the IP header) to <paramref name="destination"/>.</summary>
    public unsafe void Send(IPAddress destination, ReadOnlySpan<byte> grePacket)
    {
        var address = stackalloc byte[Libc.SockaddrStorageSize];
        var length = Libc.WriteSockaddr(destination, new Span<byte>(address, Libc.SockaddrStorageSize));
        fixed (byte* data = grePacket)
        {
            var sent = SendTo(_fd.Value, data, (nuint)grePacket.Length, 0, address, (uint)length);
            Assert.True(sent == grePacket.Length, $"sendto {destination}: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }
    }

    /// <summary>
    /// Puts an IPv6 destination options header (IPV6_DSTOPTS, RFC 3542) in front of what this IPv6 socket sends: the
    /// 8 bytes as they go on the wire, the kernel filling in the next-header byte.
    /// </summary>
    public unsafe void SetDestinationOptions(ReadOnlySpan<byte> header)
    {
        const int Ipv6DestinationOptions = 59;
        fixed (byte* options = header)
        {
            Assert.True(Libc.SetSockOpt(_fd.Value, Libc.IPPROTO_IPV6, Ipv6DestinationOptions, options, (uint)header.Length) == 0,
                $"setsockopt IPV6_DSTOPTS: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }
    }

    public void Dispose() => _fd.Dispose();

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    private static unsafe partial nint SendTo(int fd, byte* buffer, nuint length, int flags, byte* address, uint addressLength);
}
