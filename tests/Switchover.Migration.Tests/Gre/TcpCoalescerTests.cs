using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

/// <summary>
/// Merging received TCP segments into super-packets for the TUN device (GRO), against hand-built segments: what the
/// kernel gets must be what the sender segmented, and nothing that GRO would keep apart is merged.
/// </summary>
public sealed unsafe class TcpCoalescerTests
{
    private const int Room = 16;
    private const int SlotSize = Room + TcpCoalescer.MaxLength + 64;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Consecutive_segments_of_a_flow_become_one_super_packet_that_splits_back_into_them(bool v6)
    {
        var options = Packets.Timestamps(1, 2);
        var segments = Enumerable.Range(0, 5).Select(i => Packets.TcpSegment(v6, (uint)(5000 + i * 1400), i == 4 ? (byte)(Packets.Ack | Packets.Psh) : Packets.Ack,
            Packets.Pattern(i == 4 ? 300 : 1400, seed: i), id: (ushort)(100 + i), options: options)).ToArray();

        var written = Coalesce(segments);

        var (header, super, count, bytes) = Assert.Single(written);
        Assert.Equal(5, count);
        Assert.Equal(segments.Sum(s => s.Length), bytes);
        Assert.Equal(v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, header.GsoType);
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, header.Flags);
        Assert.Equal(1400, header.GsoSize);
        Assert.Equal(v6 ? 40 : 20, header.CsumStart);
        Assert.Equal(16, header.CsumOffset);
        Assert.Equal((v6 ? 40 : 20) + 32, header.HeaderLength);
        Assert.Equal(Packets.IpHeaderLength(segments[0]) + 32 + 4 * 1400 + 300, super.Length);
        Assert.True(Packets.IpChecksumValid(super), "IPv4 header checksum of the super-packet");

        // The kernel completes the partial checksum: the result must be the right checksum of the whole.
        var completed = (byte[])super.Clone();
        var ip = Packets.IpHeaderLength(super);
        BinaryPrimitives.WriteUInt16BigEndian(completed.AsSpan(ip + 16), Packets.Checksum(completed.AsSpan(ip), 0));
        Assert.True(Packets.TransportChecksumValid(completed, Packets.Tcp), "TCP checksum of the super-packet once completed");

        // And segmenting it again (what TSO or the kernel's GSO would do on the way out) gives back the originals.
        var headers = new byte[16 * 256];
        var split = new GsoSegment[16];
        Assert.Equal(GsoStatus.Ok, GsoSegmenter.Split(header, super, headers, 256, 0, split, out var n));
        Assert.Equal(5, n);
        for (var i = 0; i < n; i++)
        {
            var again = headers.AsSpan(split[i].HeaderOffset, split[i].HeaderLength).ToArray().Concat(super.AsSpan(split[i].PayloadOffset, split[i].PayloadLength).ToArray());
            Assert.Equal(segments[i], again.ToArray());
        }
    }

    [Fact]
    public void Interleaved_flows_are_merged_each_on_its_own_in_the_order_they_began()
    {
        var a = Enumerable.Range(0, 3).Select(i => Packets.TcpSegment(false, (uint)(i * 1000), Packets.Ack, Packets.Pattern(1000), sourcePort: 1111)).ToArray();
        var b = Enumerable.Range(0, 3).Select(i => Packets.TcpSegment(false, (uint)(9000 + i * 1000), Packets.Ack, Packets.Pattern(1000), sourcePort: 2222)).ToArray();

        var written = Coalesce(a[0], b[0], a[1], b[1], a[2], b[2]);

        Assert.Equal([3, 3], written.Select(w => w.Count));
        Assert.Equal([1111, 2222], written.Select(w => (int)BinaryPrimitives.ReadUInt16BigEndian(w.Packet.AsSpan(20))));
    }

    [Fact]
    public void Packets_that_share_one_buffer_as_a_UDP_GRO_read_has_them_merge_only_up_to_the_next_packet_left_alone()
    {
        // A GRO read of GRE in UDP: datagrams back to back, each a GRE header (8 bytes with a key) and a packet. A
        // super-packet grows in place over the datagrams behind it, so it stops at the first one that is an entry of
        // its own (here the UDP datagram, or the other flow's segment), and what follows starts another.
        var a = Enumerable.Range(0, 4).Select(i => Packets.TcpSegment(false, (uint)(i * 1000), Packets.Ack, Packets.Pattern(1000, seed: i), sourcePort: 1111)).ToArray();
        var b = Enumerable.Range(0, 2).Select(i => Packets.TcpSegment(false, (uint)(9000 + i * 1000), Packets.Ack, Packets.Pattern(1000, seed: 7 + i), sourcePort: 2222)).ToArray();
        var udp = Packets.UdpDatagram(false, Packets.Pattern(500, seed: 3));
        var cases = new (byte[][] Batch, List<(VirtioNetHeader Header, byte[] Packet, int Count, int Bytes)> Expected)[]
        {
            ([a[0], a[1], a[2], a[3]], Coalesce(a[0], a[1], a[2], a[3])),
            ([a[0], a[1], udp, a[2], a[3]], [.. Coalesce(a[0], a[1]), .. Coalesce(udp), .. Coalesce(a[2], a[3])]),
            ([a[0], b[0], a[1], b[1], a[2]], [.. new[] { a[0], b[0], a[1], b[1], a[2] }.SelectMany(p => Coalesce(p))]),
        };
        foreach (var (batch, expected) in cases)
        {
            var shared = Coalesce(gap: 8, batch);
            Assert.Equal(expected.Select(w => (w.Header, w.Count, w.Bytes)), shared.Select(w => (w.Header, w.Count, w.Bytes)));
            Assert.Equal(expected.Select(w => w.Packet), shared.Select(w => w.Packet));
        }
    }

    [Fact]
    public void A_segment_with_a_bad_checksum_is_not_merged_and_goes_to_the_kernel_as_it_came()
    {
        var first = Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000));
        var corrupt = Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1000));
        corrupt[^1] ^= 0x40;

        var written = Coalesce(first, corrupt);

        Assert.Equal(2, written.Count);
        Assert.All(written, w => Assert.Equal(VirtioNetHeader.GsoNone, w.Header.GsoType));
        Assert.Equal(first, written[0].Packet);
        Assert.Equal(corrupt, written[1].Packet);
    }

    [Fact]
    public void A_first_segment_with_a_bad_checksum_takes_nothing_in()
    {
        var corrupt = Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000));
        corrupt[^1] ^= 0x40;

        var written = Coalesce(corrupt, Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1000)));

        Assert.Equal([1, 1], written.Select(w => w.Count));
        Assert.Equal(corrupt, written[0].Packet);
    }

    [Fact]
    public void What_GRO_keeps_apart_is_not_merged()
    {
        var next = Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1000));

        // A gap in the sequence; another ACK number; PSH on the first; a short first segment; other options; another TTL.
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(900)), Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(900)));
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000), ack: 1), next);
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack | Packets.Psh, Packets.Pattern(1000)), next);
        AssertApart(Packets.TcpSegment(false, 500, Packets.Ack, Packets.Pattern(500)), next);
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000)), Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1000), options: Packets.Timestamps(1, 1)));
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000), ttl: 63), next);

        // A larger segment after a smaller one.
        AssertApart(Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000)), Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1200)));
    }

    [Fact]
    public void A_FIN_or_a_pure_ACK_of_the_flow_ends_its_super_packet_so_nothing_is_reordered()
    {
        var first = Packets.TcpSegment(false, 0, Packets.Ack, Packets.Pattern(1000));
        var fin = Packets.TcpSegment(false, 1000, Packets.Ack | Packets.Fin, []);
        var late = Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(1000));

        Assert.Equal([first, fin, late], Coalesce(first, fin, late).Select(w => w.Packet));
        var ack = Packets.TcpSegment(false, 1000, Packets.Ack, []);
        Assert.Equal([first, ack, late], Coalesce(first, ack, late).Select(w => w.Packet));
    }

    [Fact]
    public void A_super_packet_stops_growing_at_64_KiB_and_the_rest_starts_another()
    {
        var segments = Enumerable.Range(0, 50).Select(i => Packets.TcpSegment(false, (uint)(i * 1400), Packets.Ack, Packets.Pattern(1400))).ToArray();

        var written = Coalesce(segments);

        Assert.Equal([46, 4], written.Select(w => w.Count));
        Assert.True(written[0].Packet.Length <= TcpCoalescer.MaxLength);
        Assert.Equal(written[0].Packet.Length, BinaryPrimitives.ReadUInt16BigEndian(written[0].Packet.AsSpan(2)));
    }

    [Fact]
    public void Packets_that_are_not_TCP_pass_through_untouched_with_an_empty_header()
    {
        var udp = Packets.UdpDatagram(false, Packets.Pattern(100));
        var syn = Packets.TcpSegment(true, 0, Packets.Syn, []);

        var written = Coalesce(udp, udp, syn);

        Assert.Equal([udp, udp, syn], written.Select(w => w.Packet));
        Assert.All(written, w => Assert.Equal(default, w.Header));
    }

    private static void AssertApart(byte[] first, byte[] second) =>
        Assert.Equal([first, second], Coalesce(first, second).Select(w => w.Packet));

    /// <summary>Runs one batch through the coalescer, each packet in a slot of its own as the receive loop has them.</summary>
    private static List<(VirtioNetHeader Header, byte[] Packet, int Count, int Bytes)> Coalesce(params byte[][] packets) => Coalesce(-1, packets);

    /// <summary>
    /// The same; with a <paramref name="gap"/> of 0 or more, all packets in one buffer, each <paramref name="gap"/>
    /// bytes behind the one before, as datagrams of one UDP GRO read are.
    /// </summary>
    private static List<(VirtioNetHeader Header, byte[] Packet, int Count, int Bytes)> Coalesce(int gap, params byte[][] packets)
    {
        var memory = (byte*)NativeMemory.Alloc((nuint)(packets.Length * SlotSize));
        try
        {
            var coalescer = new TcpCoalescer(packets.Length);
            coalescer.Reset();
            var end = memory + packets.Length * SlotSize;
            var next = memory + Room;
            for (var i = 0; i < packets.Length; i++)
            {
                var at = gap < 0 ? memory + i * SlotSize + Room : next;
                packets[i].CopyTo(new Span<byte>(at, packets[i].Length));
                next = at + packets[i].Length + gap;
                coalescer.Add(at, packets[i].Length, gap < 0 ? SlotSize - Room : (int)(end - at));
            }

            var written = new List<(VirtioNetHeader, byte[], int, int)>();
            for (var i = 0; i < coalescer.Count; i++)
            {
                var (start, length, segments, bytes) = coalescer.Finish(i);
                var header = *(VirtioNetHeader*)start;
                written.Add((header, new ReadOnlySpan<byte>((byte*)start + VirtioNetHeader.Size, length - VirtioNetHeader.Size).ToArray(), segments, bytes));
            }

            return written;
        }
        finally
        {
            NativeMemory.Free(memory);
        }
    }
}
