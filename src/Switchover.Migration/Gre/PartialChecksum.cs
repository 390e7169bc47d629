using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Switchover.Migration.Gre;

/// <summary>
/// Inner packets that arrive with a partial TCP or UDP checksum. A sender's kernel that hands a packet to a device which
/// offloads checksums (CHECKSUM_PARTIAL) writes only the pseudo-header sum into the checksum field and leaves the rest to
/// the hardware. The kernel's own GRE keeps such a packet partial when it encapsulates it, and a veth, or any path that
/// stays inside one kernel (namespaces, containers, a VM's virtio-net towards its host), never completes it. A kernel GRE
/// receiver trusts the skb's state; our raw socket gets only the bytes, so the inner packet reaches the TUN device with a
/// checksum that is wrong, and the receiving stack drops it (TcpInCsumErrors): every packet of the kernel -> userspace
/// direction, in the VM lab. Found with `nstat` in the new host's namespace (the health check's SYN).
/// <para>
/// A packet whose checksum field holds exactly its pseudo-header sum and whose checksum does not verify is completed here
/// (what the kernel's skb_checksum_help does). Anything else is left as it is, so the receiving stack still drops real
/// corruption: a corrupted packet passes only if its checksum field happens to equal the pseudo-header sum as well.
/// </para>
/// </summary>
internal static class PartialChecksum
{
    private const byte ProtocolTcp = 6;
    private const byte ProtocolUdp = 17;

    /// <summary>
    /// Completes the TCP or UDP checksum of the IP packet <paramref name="packet"/> when it is partial (see the class).
    /// True when it changed the packet.
    /// </summary>
    public static bool Complete(Span<byte> packet)
    {
        if (!Locate(packet, out var addresses, out var protocol, out var transport))
        {
            return false;
        }

        var at = protocol == ProtocolTcp ? 16 : 6;
        if (transport.Length < (protocol == ProtocolTcp ? 20 : 8))
        {
            return false;
        }

        var field = MemoryMarshal.Read<ushort>(transport[at..]);
        if (protocol == ProtocolUdp && field == 0 && addresses.Length == 8)
        {
            // An IPv4 UDP datagram without a checksum.
            return false;
        }

        var pseudo = InternetChecksum.PseudoHeader(addresses, protocol, transport.Length);
        if (field != InternetChecksum.Fold(pseudo) || InternetChecksum.Fold(InternetChecksum.Accumulate(transport, pseudo)) == 0xFFFF)
        {
            return false;
        }

        // The field holds the pseudo-header sum: summing the segment over it and complementing gives the checksum.
        var checksum = (ushort)~InternetChecksum.Sum(transport);
        MemoryMarshal.Write(transport[at..], protocol == ProtocolUdp && checksum == 0 ? (ushort)0xFFFF : checksum);
        return true;
    }

    /// <summary>The addresses (as in the packet), the transport protocol and its bytes of a TCP or UDP packet that is not a fragment.</summary>
    private static bool Locate(Span<byte> packet, out ReadOnlySpan<byte> addresses, out byte protocol, out Span<byte> transport)
    {
        addresses = default;
        protocol = 0;
        transport = default;
        if (packet.Length < 20)
        {
            return false;
        }

        switch (packet[0] >> 4)
        {
            case 4:
                var headerLength = (packet[0] & 0x0F) * 4;
                var total = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);

                // A fragment's checksum is never partial: the kernel completes it before fragmenting.
                var fragmented = (BinaryPrimitives.ReadUInt16BigEndian(packet[6..]) & 0x3FFF) != 0;
                if (headerLength < 20 || total < headerLength || total > packet.Length || fragmented)
                {
                    return false;
                }

                protocol = packet[9];
                addresses = packet.Slice(12, 8);
                transport = packet[headerLength..total];
                break;
            case 6:
                if (packet.Length < 40 || BinaryPrimitives.ReadUInt16BigEndian(packet[4..]) + 40 > packet.Length)
                {
                    return false;
                }

                // Only TCP or UDP right after the fixed header: what a local TCP or UDP socket sends.
                protocol = packet[6];
                addresses = packet.Slice(8, 32);
                transport = packet.Slice(40, BinaryPrimitives.ReadUInt16BigEndian(packet[4..]));
                break;
            default:
                return false;
        }

        return protocol is ProtocolTcp or ProtocolUdp;
    }
}
