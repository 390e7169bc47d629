using System.Buffers.Binary;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

/// <summary>
/// Splitting the super-packets a TUN device with TSO/USO hands over, against segments built independently by hand
/// (<see cref="Packets"/>, with its own checksum code).
/// </summary>
public sealed class GsoSegmenterTests
{
    private const int Stride = GreCodec.MaxLength + GsoSegmenter.MaxHeaderLength;
    private const int GreRoom = 8;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_TCP_super_packet_splits_into_the_segments_the_sender_would_have_sent_one_by_one(bool v6)
    {
        var payload = Packets.Pattern(3500);
        var options = Packets.Timestamps(123456, 654321);
        var super = Packets.TcpSegment(v6, 1_000_000, Packets.Ack | Packets.Psh | Packets.Fin, payload, id: 300, options: options);
        Packets.MakePartial(super, Packets.Tcp);
        var header = TsoHeader(v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, v6 ? 40 : 20, 16, gsoSize: 1000);

        var segments = Split(header, super);

        Assert.Equal(4, segments.Count);
        for (var i = 0; i < 4; i++)
        {
            var last = i == 3;
            var expected = Packets.TcpSegment(v6, (uint)(1_000_000 + i * 1000), last ? (byte)(Packets.Ack | Packets.Psh | Packets.Fin) : Packets.Ack,
                payload.AsSpan(i * 1000, last ? 500 : 1000), id: (ushort)(300 + i), options: options);
            Assert.True(Packets.IpChecksumValid(segments[i]), $"segment {i}: IPv4 header checksum");
            Assert.True(Packets.TransportChecksumValid(segments[i], Packets.Tcp), $"segment {i}: TCP checksum");
            Assert.Equal(expected, segments[i]);
        }
    }

    [Fact]
    public void Sequence_numbers_and_IPv4_ids_wrap_around_like_the_kernels()
    {
        var payload = Packets.Pattern(2000);
        var super = Packets.TcpSegment(false, uint.MaxValue - 499, Packets.Ack, payload, id: ushort.MaxValue);
        Packets.MakePartial(super, Packets.Tcp);

        var segments = Split(TsoHeader(VirtioNetHeader.GsoTcpV4, 20, 16, gsoSize: 1000), super);

        Assert.Equal(Packets.TcpSegment(false, 500, Packets.Ack, payload.AsSpan(1000), id: 0), segments[1]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_UDP_super_packet_splits_into_datagrams_with_their_own_lengths_and_checksums(bool v6)
    {
        var payload = Packets.Pattern(3000, seed: 5);
        var super = Packets.UdpDatagram(v6, payload, id: 9);
        Packets.MakePartial(super, Packets.Udp);

        var segments = Split(TsoHeader(VirtioNetHeader.GsoUdpL4, v6 ? 40 : 20, 6, gsoSize: 1200), super);

        Assert.Equal(3, segments.Count);
        for (var i = 0; i < 3; i++)
        {
            var expected = Packets.UdpDatagram(v6, payload.AsSpan(i * 1200, i == 2 ? 600 : 1200), id: (ushort)(9 + i));
            Assert.True(Packets.TransportChecksumValid(segments[i], Packets.Udp), $"datagram {i}: UDP checksum");
            Assert.Equal(expected, segments[i]);
        }
    }

    [Theory]
    [InlineData(false, Packets.Tcp)]
    [InlineData(true, Packets.Tcp)]
    [InlineData(false, Packets.Udp)]
    public void A_partial_checksum_without_GSO_is_completed_to_the_one_the_sender_would_have_sent(bool v6, byte protocol)
    {
        var payload = Packets.Pattern(777);
        var complete = protocol == Packets.Tcp ? Packets.TcpSegment(v6, 42, Packets.Ack | Packets.Psh, payload) : Packets.UdpDatagram(v6, payload);
        var partial = (byte[])complete.Clone();
        Packets.MakePartial(partial, protocol);
        Assert.NotEqual(complete, partial);
        var header = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            CsumStart = (ushort)(v6 ? 40 : 20),
            CsumOffset = (ushort)(protocol == Packets.Tcp ? 16 : 6),
        };

        Assert.Equal(GsoStatus.Ok, GsoSegmenter.CompleteChecksum(header, partial));

        Assert.Equal(complete, partial);
    }

    [Fact]
    public void A_header_that_disagrees_with_its_packet_is_refused_not_trusted()
    {
        var super = Packets.TcpSegment(false, 1, Packets.Ack, Packets.Pattern(3000));
        var headers = new byte[64 * Stride];
        var segments = new GsoSegment[64];

        // TCPv6 GSO on an IPv4 packet; the transport header past the end; a zero segment size; UFO, never offered.
        Assert.Equal(GsoStatus.Malformed, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoTcpV6, 20, 16, 1000), super, headers, Stride, GreRoom, segments, out _));
        Assert.Equal(GsoStatus.Malformed, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoTcpV4, 3100, 16, 1000), super, headers, Stride, GreRoom, segments, out _));
        Assert.Equal(GsoStatus.Malformed, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoTcpV4, 20, 16, 0), super, headers, Stride, GreRoom, segments, out _));
        Assert.Equal(GsoStatus.Unsupported, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoUdp, 20, 6, 1000), super, headers, Stride, GreRoom, segments, out _));

        // Three segments do not fit in room for two: the caller sends its batch and tries again.
        Assert.Equal(GsoStatus.TooManySegments, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoTcpV4, 20, 16, 1000), super, headers, Stride, GreRoom, segments.AsSpan(0, 2), out _));
        Assert.Equal(GsoStatus.Ok, GsoSegmenter.Split(TsoHeader(VirtioNetHeader.GsoTcpV4, 20, 16, 1000), super, headers, Stride, GreRoom, segments.AsSpan(0, 3), out var count));
        Assert.Equal(3, count);
    }

    private static VirtioNetHeader TsoHeader(byte gsoType, int csumStart, int csumOffset, int gsoSize) => new()
    {
        Flags = VirtioNetHeader.FlagNeedsCsum,
        GsoType = gsoType,
        HeaderLength = 0, // a hint the splitter must not need
        GsoSize = (ushort)gsoSize,
        CsumStart = (ushort)csumStart,
        CsumOffset = (ushort)csumOffset,
    };

    /// <summary>Splits and glues each segment's headers and payload together, as sendmmsg's two iovecs do.</summary>
    private static List<byte[]> Split(VirtioNetHeader header, byte[] super)
    {
        var headers = new byte[64 * Stride];
        var segments = new GsoSegment[64];
        var status = GsoSegmenter.Split(header, super, headers, Stride, GreRoom, segments, out var count);
        Assert.Equal(GsoStatus.Ok, status);
        return segments.Take(count).Select(s =>
        {
            Assert.Equal(0, (s.HeaderOffset - GreRoom) % Stride);
            return headers.AsSpan(s.HeaderOffset, s.HeaderLength).ToArray().Concat(super.AsSpan(s.PayloadOffset, s.PayloadLength).ToArray()).ToArray();
        }).ToList();
    }
}
