using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Switchover.Migration.Gre;

/// <summary>
/// The fields of a GRE header (RFC 2784) with the key and sequence number of RFC 2890. A checksum is either sent
/// (<see cref="HasChecksum"/> when encoding) or was present and verified (when decoding).
/// </summary>
internal readonly record struct GreHeader(ushort ProtocolType, uint? Key = null, uint? SequenceNumber = null, bool HasChecksum = false)
{
    /// <summary>The encoded length: 4 bytes, plus 4 for each of checksum, key and sequence number that is present.</summary>
    public int Length => GreCodec.BaseLength + (HasChecksum ? 4 : 0) + (Key.HasValue ? 4 : 0) + (SequenceNumber.HasValue ? 4 : 0);
}

/// <summary>Why a GRE packet was rejected.</summary>
internal enum GreDecodeStatus
{
    Ok,

    /// <summary>Shorter than its own flags say (or than 4 bytes).</summary>
    Truncated,

    /// <summary>Version is not 0 (version 1 is PPTP's enhanced GRE).</summary>
    UnsupportedVersion,

    /// <summary>The routing bit of RFC 1701 is set; RFC 2784 receivers discard such packets.</summary>
    RoutingPresent,

    /// <summary>Bit 4 (strict source route) or bit 5 is set; RFC 2784 receivers discard such packets.</summary>
    ReservedFlagsSet,

    /// <summary>The checksum bit is set and the checksum is wrong.</summary>
    ChecksumMismatch,

    /// <summary>The protocol type is neither IPv4 (0x0800) nor IPv6 (0x86DD).</summary>
    UnsupportedProtocol,
}

/// <summary>
/// Encodes and decodes GRE headers (RFC 2784, keys and sequence numbers of RFC 2890) in caller-owned buffers. Pure and
/// allocation-free: the packet loops call it once per packet.
/// </summary>
internal static class GreCodec
{
    public const int BaseLength = 4;

    /// <summary>Checksum, key and sequence number all present.</summary>
    public const int MaxLength = 16;

    public const ushort ProtocolIPv4 = 0x0800;
    public const ushort ProtocolIPv6 = 0x86DD;

    // First byte: C R K S s Recur(3). Second byte: Flags(5) Ver(3).
    private const byte ChecksumBit = 0x80;
    private const byte RoutingBit = 0x40;
    private const byte KeyBit = 0x20;
    private const byte SequenceBit = 0x10;
    private const byte DiscardBits = 0x0C; // strict source route and the first recursion-control bit (RFC 2784 §2.3)
    private const byte VersionMask = 0x07;

    /// <summary>
    /// Writes <paramref name="header"/> at the start of <paramref name="packet"/>, which holds the header's room followed
    /// by the payload, and nothing after it: a checksum covers the whole span. Returns the header length.
    /// </summary>
    public static int WriteHeader(in GreHeader header, Span<byte> packet) => WriteHeader(header, packet, default);

    /// <summary>
    /// Writes <paramref name="header"/> at the start of <paramref name="packet"/> for a packet sent in two parts:
    /// <paramref name="packet"/> (the header's room, then the start of the payload; an even length) and
    /// <paramref name="rest"/>. A checksum covers both.
    /// </summary>
    public static int WriteHeader(in GreHeader header, Span<byte> packet, ReadOnlySpan<byte> rest)
    {
        var length = header.Length;
        if (packet.Length < length)
        {
            throw new ArgumentException($"The packet buffer ({packet.Length} bytes) has no room for a {length}-byte GRE header.", nameof(packet));
        }

        packet[0] = (byte)((header.HasChecksum ? ChecksumBit : 0) | (header.Key.HasValue ? KeyBit : 0) | (header.SequenceNumber.HasValue ? SequenceBit : 0));
        packet[1] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(packet[2..], header.ProtocolType);
        var offset = BaseLength;
        if (header.HasChecksum)
        {
            // Zero while summing; Reserved1 stays zero.
            BinaryPrimitives.WriteUInt32BigEndian(packet[offset..], 0);
            offset += 4;
        }

        if (header.Key is { } key)
        {
            BinaryPrimitives.WriteUInt32BigEndian(packet[offset..], key);
            offset += 4;
        }

        if (header.SequenceNumber is { } sequence)
        {
            BinaryPrimitives.WriteUInt32BigEndian(packet[offset..], sequence);
        }

        if (header.HasChecksum)
        {
            MemoryMarshal.Write(packet[BaseLength..], (ushort)~InternetChecksum.Fold(InternetChecksum.Accumulate(rest, InternetChecksum.Accumulate(packet, 0))));
        }

        return length;
    }

    /// <summary>Writes the header and a copy of <paramref name="payload"/> into <paramref name="destination"/>; returns the total length.</summary>
    public static int Encode(in GreHeader header, ReadOnlySpan<byte> payload, Span<byte> destination)
    {
        var total = header.Length + payload.Length;
        if (destination.Length < total)
        {
            throw new ArgumentException($"The destination ({destination.Length} bytes) is shorter than the GRE packet ({total} bytes).", nameof(destination));
        }

        payload.CopyTo(destination[header.Length..]);
        WriteHeader(header, destination[..total]);
        return total;
    }

    /// <summary>
    /// Parses a GRE packet (starting at the GRE header). On <see cref="GreDecodeStatus.Ok"/> and on
    /// <see cref="GreDecodeStatus.UnsupportedProtocol"/>, <paramref name="header"/> and <paramref name="payload"/> are set.
    /// A sequence number is parsed and returned, never enforced.
    /// </summary>
    public static GreDecodeStatus Decode(ReadOnlySpan<byte> packet, out GreHeader header, out ReadOnlySpan<byte> payload)
    {
        header = default;
        payload = default;
        if (packet.Length < BaseLength)
        {
            return GreDecodeStatus.Truncated;
        }

        var flags = packet[0];
        if ((packet[1] & VersionMask) != 0)
        {
            return GreDecodeStatus.UnsupportedVersion;
        }

        if ((flags & RoutingBit) != 0)
        {
            return GreDecodeStatus.RoutingPresent;
        }

        if ((flags & DiscardBits) != 0)
        {
            return GreDecodeStatus.ReservedFlagsSet;
        }

        var hasChecksum = (flags & ChecksumBit) != 0;
        var hasKey = (flags & KeyBit) != 0;
        var hasSequence = (flags & SequenceBit) != 0;
        var length = BaseLength + (hasChecksum ? 4 : 0) + (hasKey ? 4 : 0) + (hasSequence ? 4 : 0);
        if (packet.Length < length)
        {
            return GreDecodeStatus.Truncated;
        }

        if (hasChecksum && InternetChecksum.Sum(packet) != 0xFFFF)
        {
            return GreDecodeStatus.ChecksumMismatch;
        }

        var offset = BaseLength + (hasChecksum ? 4 : 0);
        uint? key = null;
        if (hasKey)
        {
            key = BinaryPrimitives.ReadUInt32BigEndian(packet[offset..]);
            offset += 4;
        }

        uint? sequence = hasSequence ? BinaryPrimitives.ReadUInt32BigEndian(packet[offset..]) : null;
        var protocol = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        header = new GreHeader(protocol, key, sequence, hasChecksum);
        payload = packet[length..];
        return protocol is ProtocolIPv4 or ProtocolIPv6 ? GreDecodeStatus.Ok : GreDecodeStatus.UnsupportedProtocol;
    }

    /// <summary>The GRE protocol type for an IP packet, from its version nibble; 0 when it is neither IPv4 nor IPv6.</summary>
    public static ushort ProtocolOf(ReadOnlySpan<byte> ipPacket) =>
        ipPacket.IsEmpty ? (ushort)0 : (ipPacket[0] >> 4) switch
        {
            4 => ProtocolIPv4,
            6 => ProtocolIPv6,
            _ => (ushort)0,
        };
}

/// <summary>The Internet checksum (RFC 1071) that GRE, IPv4, TCP and UDP use.</summary>
internal static class InternetChecksum
{
    /// <summary>
    /// The one's complement sum of <paramref name="data"/> as 16-bit words, folded to 16 bits, in native byte order
    /// (RFC 1071 §2(B): the sum is independent of byte order, so it is summed in native order and stored as it is).
    /// A span that contains a correct checksum sums to 0xFFFF.
    /// </summary>
    public static ushort Sum(ReadOnlySpan<byte> data) => Fold(Accumulate(data, 0));

    /// <summary>
    /// Adds <paramref name="data"/> to a running sum (unfolded, native order). Parts of one checksummed range may be
    /// summed separately as long as every part but the last has an even length.
    /// </summary>
    public static ulong Accumulate(ReadOnlySpan<byte> data, ulong sum)
    {
        // 32-bit words added into 64-bit lanes cannot overflow for any packet: the carries are folded at the end.
        var words = MemoryMarshal.Cast<byte, uint>(data);
        var i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated && words.Length >= 2 * System.Numerics.Vector<uint>.Count)
        {
            var lanes = System.Numerics.Vector<ulong>.Zero;
            var vectors = MemoryMarshal.Cast<uint, System.Numerics.Vector<uint>>(words);
            foreach (var vector in vectors)
            {
                System.Numerics.Vector.Widen(vector, out var low, out var high);
                lanes += low + high;
            }

            sum += System.Numerics.Vector.Sum(lanes);
            i = vectors.Length * System.Numerics.Vector<uint>.Count;
        }

        for (; i < words.Length; i++)
        {
            sum += words[i];
        }

        var rest = data[(words.Length * 4)..];
        if (rest.Length >= 2)
        {
            sum += MemoryMarshal.Read<ushort>(rest);
            rest = rest[2..];
        }

        if (rest.Length == 1)
        {
            // An odd byte is padded with a zero byte after it, in memory order.
            sum += BitConverter.IsLittleEndian ? rest[0] : (uint)rest[0] << 8;
        }

        return sum;
    }

    /// <summary>Folds a running sum to 16 bits (native order).</summary>
    public static ushort Fold(ulong sum)
    {
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)sum;
    }

    /// <summary>
    /// The running sum of the TCP/UDP pseudo-header (RFC 793, RFC 8200 §8.1): both addresses as they are in the
    /// packet (4 or 16 bytes each), the protocol number and the transport length.
    /// </summary>
    public static ulong PseudoHeader(ReadOnlySpan<byte> addresses, byte protocol, int transportLength) =>
        Accumulate(addresses, NativeWord(protocol) + NativeWord(transportLength));

    /// <summary>A big-endian 16-bit field value as the native-order word <see cref="Accumulate"/> would read from memory.</summary>
    public static uint NativeWord(int value) =>
        BitConverter.IsLittleEndian ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)value) : (ushort)value;
}
