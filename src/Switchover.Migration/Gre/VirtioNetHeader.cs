using System.Runtime.InteropServices;

namespace Switchover.Migration.Gre;

/// <summary>
/// struct virtio_net_hdr (include/uapi/linux/virtio_net.h), 10 bytes, in front of every packet read from or written to
/// a TUN device opened with IFF_VNET_HDR. Host byte order (a TUN device uses the legacy, native-endian layout unless
/// TUNSETVNETLE/BE says otherwise).
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VirtioNetHeader
{
    public const int Size = 10;

    /// <summary>The checksum from <see cref="CsumStart"/> to the end is partial: the pseudo-header sum is at <see cref="CsumStart"/> + <see cref="CsumOffset"/>.</summary>
    public const byte FlagNeedsCsum = 1;

    public const byte GsoNone = 0;
    public const byte GsoTcpV4 = 1;
    public const byte GsoUdp = 3;
    public const byte GsoTcpV6 = 4;
    public const byte GsoUdpL4 = 5;

    /// <summary>Or'ed into <see cref="GsoType"/>: the TCP super-packet carries CWR (only with TUN_F_TSO_ECN, not offered).</summary>
    public const byte GsoEcn = 0x80;

    public byte Flags;
    public byte GsoType;

    /// <summary>Length of the headers (IP and transport); a hint only, not trusted.</summary>
    public ushort HeaderLength;

    /// <summary>Payload bytes per segment.</summary>
    public ushort GsoSize;
    public ushort CsumStart;
    public ushort CsumOffset;
}
