using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

public sealed class GreCodecTests
{
    private static readonly byte[] Payload = [0x45, 0x00, 0x00, 0x14, 0xAB];

    [Fact]
    public void The_basic_header_is_four_bytes_no_flags_version_0_and_the_protocol_type()
    {
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv4), Payload);
        Assert.Equal([0x00, 0x00, 0x08, 0x00, .. Payload], packet);
    }

    [Fact]
    public void A_key_sets_the_K_bit_and_follows_the_basic_header_in_network_order()
    {
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv6, Key: 0x01020304), [0x60, 0x01]);
        Assert.Equal([0x20, 0x00, 0x86, 0xDD, 0x01, 0x02, 0x03, 0x04, 0x60, 0x01], packet);
    }

    [Fact]
    public void Checksum_key_and_sequence_number_come_in_the_order_of_RFC_2890()
    {
        // Checksum computed by hand: ~(B000 + 0800 + 002A + 0007 + 0102 + 0300) = ~BC33 = 43CC (odd byte padded with zero).
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv4, Key: 42, SequenceNumber: 7, HasChecksum: true), [0x01, 0x02, 0x03]);
        Assert.Equal(
            [0xB0, 0x00, 0x08, 0x00, 0x43, 0xCC, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A, 0x00, 0x00, 0x00, 0x07, 0x01, 0x02, 0x03],
            packet);
    }

    [Fact]
    public void A_checksum_alone_is_followed_by_the_reserved1_field()
    {
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv6, HasChecksum: true), [0x60, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
        Assert.Equal([0x80, 0x00, 0x86, 0xDD, 0x99, 0x21, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], packet);
    }

    [Fact]
    public void The_internet_checksum_matches_the_example_of_RFC_1071()
    {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        var sum = InternetChecksum.Sum([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]);
        var bytes = new byte[2];
        MemoryMarshal.Write(bytes, sum);
        Assert.Equal([0xDD, 0xF2], bytes);
    }

    public static TheoryData<ushort, uint?, uint?, bool> Headers()
    {
        var data = new TheoryData<ushort, uint?, uint?, bool>();
        foreach (var protocol in new[] { GreCodec.ProtocolIPv4, GreCodec.ProtocolIPv6 })
        {
            foreach (var key in new uint?[] { null, 0, 1, 0xFFFFFFFF })
            {
                foreach (var sequence in new uint?[] { null, 0, 0x80000001 })
                {
                    data.Add(protocol, key, sequence, false);
                    data.Add(protocol, key, sequence, true);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Headers))]
    public void What_is_encoded_decodes_to_the_same_header_and_payload(ushort protocol, uint? key, uint? sequence, bool checksum)
    {
        var header = new GreHeader(protocol, key, sequence, checksum);
        foreach (var length in new[] { 0, 1, 2, 3, 1400, 1401 })
        {
            var payload = Enumerable.Range(0, length).Select(i => (byte)(i * 7 + 3)).ToArray();
            var packet = Encode(header, payload);
            Assert.Equal(header.Length + length, packet.Length);
            Assert.Equal(GreDecodeStatus.Ok, GreCodec.Decode(packet, out var decoded, out var decodedPayload));
            Assert.Equal(header, decoded);
            Assert.Equal(payload, decodedPayload.ToArray());
        }
    }

    [Fact]
    public void A_payload_already_in_place_behind_the_header_is_framed_without_a_copy()
    {
        var header = new GreHeader(GreCodec.ProtocolIPv4, Key: 9, HasChecksum: true);
        var buffer = new byte[header.Length + Payload.Length];
        Payload.CopyTo(buffer, header.Length);
        Assert.Equal(header.Length, GreCodec.WriteHeader(header, buffer));
        Assert.Equal(Encode(header, Payload), buffer);
    }

    [Theory]
    [InlineData(new byte[0], nameof(GreDecodeStatus.Truncated))]
    [InlineData(new byte[] { 0x00, 0x00, 0x08 }, nameof(GreDecodeStatus.Truncated))]
    [InlineData(new byte[] { 0x20, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01 }, nameof(GreDecodeStatus.Truncated))] // K set, key cut short
    [InlineData(new byte[] { 0x90, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 }, nameof(GreDecodeStatus.Truncated))] // C and S, no sequence
    [InlineData(new byte[] { 0x00, 0x01, 0x08, 0x00, 0x45 }, nameof(GreDecodeStatus.UnsupportedVersion))] // version 1 (PPTP)
    [InlineData(new byte[] { 0x30, 0x81, 0x88, 0x0B, 0x00, 0x00, 0x00, 0x00 }, nameof(GreDecodeStatus.UnsupportedVersion))] // enhanced GRE
    [InlineData(new byte[] { 0x40, 0x00, 0x08, 0x00, 0x45 }, nameof(GreDecodeStatus.RoutingPresent))]
    [InlineData(new byte[] { 0x08, 0x00, 0x08, 0x00, 0x45 }, nameof(GreDecodeStatus.ReservedFlagsSet))] // strict source route
    [InlineData(new byte[] { 0x04, 0x00, 0x08, 0x00, 0x45 }, nameof(GreDecodeStatus.ReservedFlagsSet))] // bit 5
    [InlineData(new byte[] { 0x00, 0x00, 0x65, 0x58, 0x00 }, nameof(GreDecodeStatus.UnsupportedProtocol))] // transparent Ethernet bridging
    [InlineData(new byte[] { 0x00, 0x00, 0x00, 0x00 }, nameof(GreDecodeStatus.UnsupportedProtocol))] // keepalive-style protocol 0
    public void Malformed_or_unsupported_packets_are_rejected_with_the_reason(byte[] packet, string expected)
    {
        Assert.Equal(expected, GreCodec.Decode(packet, out _, out _).ToString());
    }

    [Fact]
    public void A_wrong_checksum_is_rejected_and_any_flipped_bit_makes_it_wrong()
    {
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv4, Key: 5, HasChecksum: true), Payload);
        Assert.Equal(GreDecodeStatus.Ok, GreCodec.Decode(packet, out _, out _));
        for (var bit = 0; bit < packet.Length * 8; bit++)
        {
            if (bit / 8 is 0 or 1 or 2 or 3)
            {
                continue; // Flags, version and protocol have their own rejections.
            }

            var corrupt = (byte[])packet.Clone();
            corrupt[bit / 8] ^= (byte)(0x80 >> (bit % 8));
            Assert.Equal(GreDecodeStatus.ChecksumMismatch, GreCodec.Decode(corrupt, out _, out _));
        }
    }

    [Fact]
    public void Reserved_bits_6_to_12_are_ignored_as_RFC_2784_requires()
    {
        var packet = Encode(new GreHeader(GreCodec.ProtocolIPv4, Key: 3), Payload);
        packet[0] |= 0x03;
        packet[1] |= 0xF8;
        Assert.Equal(GreDecodeStatus.Ok, GreCodec.Decode(packet, out var header, out var payload));
        Assert.Equal(3u, header.Key);
        Assert.Equal(Payload, payload.ToArray());
    }

    [Fact]
    public void A_buffer_too_short_for_the_header_is_refused_with_a_clear_error()
    {
        var error = Assert.Throws<ArgumentException>(() => GreCodec.WriteHeader(new GreHeader(GreCodec.ProtocolIPv4, Key: 1), new byte[7]));
        Assert.Contains("8-byte GRE header", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => GreCodec.Encode(new GreHeader(GreCodec.ProtocolIPv4), Payload, new byte[8]));
    }

    [Theory]
    [InlineData(new byte[] { 0x45, 0x00 }, GreCodec.ProtocolIPv4)]
    [InlineData(new byte[] { 0x60, 0x00 }, GreCodec.ProtocolIPv6)]
    [InlineData(new byte[] { 0x50, 0x00 }, 0)]
    [InlineData(new byte[0], 0)]
    public void The_protocol_type_of_an_inner_packet_comes_from_its_version_nibble(byte[] packet, int expected)
    {
        Assert.Equal((ushort)expected, GreCodec.ProtocolOf(packet));
    }

    [Fact]
    public void Encoding_and_decoding_allocate_nothing()
    {
        var buffer = new byte[2048];
        var payload = new byte[1400];
        payload[0] = 0x45;
        var header = new GreHeader(GreCodec.ProtocolIPv4, Key: 7, SequenceNumber: 1, HasChecksum: true);
        RoundTrip(buffer, payload, header); // JIT first.
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            RoundTrip(buffer, payload, header);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        static void RoundTrip(byte[] buffer, byte[] payload, GreHeader header)
        {
            var length = GreCodec.Encode(header, payload, buffer);
            if (GreCodec.Decode(buffer.AsSpan(0, length), out _, out var decoded) != GreDecodeStatus.Ok || decoded.Length != payload.Length)
            {
                throw new InvalidOperationException("round trip failed");
            }
        }
    }

    [Fact]
    public void A_decoded_key_is_read_in_network_order()
    {
        var packet = new byte[12];
        packet[0] = 0x20;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), GreCodec.ProtocolIPv4);
        BinaryPrimitives.WriteUInt32BigEndian(packet.AsSpan(4), 0xDEADBEEF);
        packet[8] = 0x45;
        Assert.Equal(GreDecodeStatus.Ok, GreCodec.Decode(packet, out var header, out var payload));
        Assert.Equal(0xDEADBEEF, header.Key);
        Assert.Null(header.SequenceNumber);
        Assert.False(header.HasChecksum);
        Assert.Equal(4, payload.Length);
    }

    private static byte[] Encode(GreHeader header, byte[] payload)
    {
        var buffer = new byte[header.Length + payload.Length];
        Assert.Equal(buffer.Length, GreCodec.Encode(header, payload, buffer));
        return buffer;
    }
}
