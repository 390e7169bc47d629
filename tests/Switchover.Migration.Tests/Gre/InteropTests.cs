using System.Runtime.InteropServices;
using Switchover.Migration.Gre;
using Switchover.Migration.Interop;

namespace Switchover.Migration.Tests.Gre;

/// <summary>The native layouts and constants the packet loops depend on, checked against their definitions.</summary>
public sealed class InteropTests
{
    [Fact]
    public unsafe void Structures_have_their_LP64_sizes_and_offsets()
    {
        Assert.Equal(16, sizeof(IoVec));
        Assert.Equal(56, sizeof(MsgHdr));
        Assert.Equal(64, sizeof(MMsgHdr));
        Assert.Equal(8, sizeof(PollFd));
        Assert.Equal(48, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Flags)));
        Assert.Equal(56, (int)Marshal.OffsetOf<MMsgHdr>(nameof(MMsgHdr.Length)));
    }

    [Fact]
    public void TUNSETIFF_is_IOW_T_202_int()
    {
        // _IOW(type, nr, size) = (1 << 30) | (size << 16) | (type << 8) | nr  (asm-generic/ioctl.h)
        const uint expected = (1u << 30) | (sizeof(int) << 16) | ('T' << 8) | 202;
        Assert.Equal(expected, Libc.TUNSETIFF);
    }

    [Fact]
    public unsafe void TUNSETOFFLOAD_is_IOW_T_208_unsigned_int_and_virtio_net_hdr_is_10_bytes()
    {
        const uint expected = (1u << 30) | (sizeof(uint) << 16) | ('T' << 8) | 208;
        Assert.Equal(expected, Libc.TUNSETOFFLOAD);
        Assert.Equal(VirtioNetHeader.Size, sizeof(VirtioNetHeader));
        Assert.Equal(6, (int)Marshal.OffsetOf<VirtioNetHeader>(nameof(VirtioNetHeader.CsumStart)));
    }

    [Fact]
    public void A_sockaddr_is_written_in_the_kernels_layout()
    {
        var buffer = new byte[Libc.SockaddrStorageSize];
        Assert.Equal(16, Libc.WriteSockaddr(System.Net.IPAddress.Parse("192.0.2.1"), buffer));
        Assert.Equal([2, 0, 0, 0, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0], buffer[..16]);
        Assert.Equal(28, Libc.WriteSockaddr(System.Net.IPAddress.Parse("2001:db8::1"), buffer));
        Assert.Equal([10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8], buffer[..12]);
        Assert.Equal(1, buffer[23]);
    }
}
