using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Switchover.Migration.Gre;

/// <summary>One segment of a split super-packet: its headers in the header arena, its payload still in the packet.</summary>
internal readonly record struct GsoSegment(int HeaderOffset, int HeaderLength, int PayloadOffset, int PayloadLength)
{
    public int Length => HeaderLength + PayloadLength;
}

internal enum GsoStatus
{
    Ok,

    /// <summary>The virtio header and the packet disagree (wrong version for the GSO type, offsets past the end, …).</summary>
    Malformed,

    /// <summary>More segments than the caller has room for.</summary>
    TooManySegments,

    /// <summary>A GSO type this tunnel did not offer (ECN, UFO).</summary>
    Unsupported,
}

/// <summary>
/// Userspace GSO for a TUN device with IFF_VNET_HDR: what the kernel's tcp_gso_segment / __udp_gso_segment would do
/// to a super-packet before a NIC without TSO. Each segment gets a copy of the IP and transport headers with its own
/// IPv4 total length, id and header checksum (or IPv6 payload length), TCP sequence number and flags (FIN and PSH on
/// the last segment only, CWR on the first only) or UDP length, and a complete transport checksum. The payload is not
/// copied: a segment points into the packet, and the caller sends headers and payload as two iovecs.
/// Nothing in the packet or header is trusted: the kernel's hdr_len in particular is recomputed.
/// </summary>
internal static class GsoSegmenter
{
    private const byte ProtocolTcp = 6;
    private const byte ProtocolUdp = 17;
    private const byte TcpFin = 0x01;
    private const byte TcpPsh = 0x08;
    private const byte TcpCwr = 0x80;

    /// <summary>The most header bytes a segment can have: IPv6 with extension headers up to 128 bytes, and a 60-byte TCP header.</summary>
    public const int MaxHeaderLength = 192;

    /// <summary>
    /// Splits <paramref name="packet"/> (the IP packet after <paramref name="header"/>) into segments of
    /// <see cref="VirtioNetHeader.GsoSize"/> payload bytes. Segment i's headers are written to
    /// <paramref name="headers"/> at i × <paramref name="stride"/> + <paramref name="headerOffset"/> (the caller keeps
    /// room in front for its own, the GRE header). The packet's own headers are modified (checksums cleared).
    /// </summary>
    public static GsoStatus Split(in VirtioNetHeader header, Span<byte> packet, Span<byte> headers, int stride, int headerOffset,
        Span<GsoSegment> segments, out int count)
    {
        count = 0;
        var gsoType = header.GsoType;
        if ((gsoType & VirtioNetHeader.GsoEcn) != 0 || gsoType is not (VirtioNetHeader.GsoTcpV4 or VirtioNetHeader.GsoTcpV6 or VirtioNetHeader.GsoUdpL4))
        {
            return GsoStatus.Unsupported;
        }

        if (packet.Length < 20)
        {
            return GsoStatus.Malformed;
        }

        var version = packet[0] >> 4;
        var v6 = version == 6;
        if (version is not (4 or 6) || (gsoType == VirtioNetHeader.GsoTcpV4 && v6) || (gsoType == VirtioNetHeader.GsoTcpV6 && !v6))
        {
            return GsoStatus.Malformed;
        }

        var tcp = gsoType != VirtioNetHeader.GsoUdpL4;
        var protocol = tcp ? ProtocolTcp : ProtocolUdp;
        int transport = header.CsumStart;
        int ipHeaderLength = v6 ? 40 : (packet[0] & 0x0F) * 4;
        if (transport < ipHeaderLength || (!v6 && transport != ipHeaderLength) || transport + (tcp ? 20 : 8) > packet.Length)
        {
            return GsoStatus.Malformed;
        }

        // The protocol field can be checked when no IPv6 extension header sits between.
        if ((v6 ? transport == 40 && packet[6] != protocol : packet[9] != protocol) || (header.Flags & VirtioNetHeader.FlagNeedsCsum) == 0)
        {
            return GsoStatus.Malformed;
        }

        var transportHeaderLength = tcp ? (packet[transport + 12] >> 4) * 4 : 8;
        var headerLength = transport + transportHeaderLength;
        int gsoSize = header.GsoSize;
        if ((tcp && transportHeaderLength < 20) || headerLength >= packet.Length || headerLength > MaxHeaderLength ||
            headerOffset + headerLength > stride || gsoSize == 0)
        {
            return GsoStatus.Malformed;
        }

        var payloadLength = packet.Length - headerLength;
        var needed = (payloadLength + gsoSize - 1) / gsoSize;
        if (needed > segments.Length || (needed - 1) * stride + headerOffset + headerLength > headers.Length)
        {
            return GsoStatus.TooManySegments;
        }

        var checksumAt = transport + (tcp ? 16 : 6);
        packet[checksumAt] = 0;
        packet[checksumAt + 1] = 0;
        var addresses = v6 ? packet.Slice(8, 32) : packet.Slice(12, 8);
        var firstSequence = tcp ? BinaryPrimitives.ReadUInt32BigEndian(packet[(transport + 4)..]) : 0;
        var firstId = v6 ? (ushort)0 : BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);
        var template = packet[..headerLength];
        for (var i = 0; i < needed; i++)
        {
            var payloadOffset = headerLength + i * gsoSize;
            var length = Math.Min(gsoSize, packet.Length - payloadOffset);
            var at = i * stride + headerOffset;
            var h = headers.Slice(at, headerLength);
            template.CopyTo(h);
            var segmentLength = headerLength + length;
            if (v6)
            {
                BinaryPrimitives.WriteUInt16BigEndian(h[4..], (ushort)(segmentLength - 40));
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(h[2..], (ushort)segmentLength);
                BinaryPrimitives.WriteUInt16BigEndian(h[4..], (ushort)(firstId + i));
                h[10] = 0;
                h[11] = 0;
                MemoryMarshal.Write(h[10..], (ushort)~InternetChecksum.Sum(h[..ipHeaderLength]));
            }

            if (tcp)
            {
                BinaryPrimitives.WriteUInt32BigEndian(h[(transport + 4)..], unchecked(firstSequence + (uint)(i * gsoSize)));
                if (i != needed - 1)
                {
                    h[transport + 13] &= unchecked((byte)~(TcpFin | TcpPsh));
                }

                if (i != 0)
                {
                    h[transport + 13] &= unchecked((byte)~TcpCwr);
                }
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(h[(transport + 4)..], (ushort)(8 + length));
            }

            var transportLength = transportHeaderLength + length;
            var sum = InternetChecksum.PseudoHeader(addresses, protocol, transportLength);
            sum = InternetChecksum.Accumulate(h[transport..], sum);
            sum = InternetChecksum.Accumulate(packet.Slice(payloadOffset, length), sum);
            MemoryMarshal.Write(h[(checksumAt)..], NonZero((ushort)~InternetChecksum.Fold(sum)));
            segments[i] = new GsoSegment(at, headerLength, payloadOffset, length);
        }

        count = needed;
        return GsoStatus.Ok;
    }

    /// <summary>
    /// Completes the partial checksum of a packet without GSO that the kernel marked NEEDS_CSUM (CHECKSUM_PARTIAL): the
    /// field at csum_start + csum_offset holds the pseudo-header sum, and the sum from csum_start on goes over it.
    /// </summary>
    public static GsoStatus CompleteChecksum(in VirtioNetHeader header, Span<byte> packet)
    {
        int start = header.CsumStart;
        var at = start + header.CsumOffset;
        if (at + 2 > packet.Length || (at & 1) != (start & 1))
        {
            return GsoStatus.Malformed;
        }

        MemoryMarshal.Write(packet[at..], NonZero((ushort)~InternetChecksum.Sum(packet[start..])));
        return GsoStatus.Ok;
    }

    // 0x0000 and 0xFFFF are the same one's complement number; a UDP checksum of 0 means "none", so never send it.
    private static ushort NonZero(ushort checksum) => checksum == 0 ? (ushort)0xFFFF : checksum;
}
