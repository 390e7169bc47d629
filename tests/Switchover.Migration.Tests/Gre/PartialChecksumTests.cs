using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

/// <summary>
/// Inner packets from a kernel GRE sender in the same kernel carry a partial checksum (the pseudo-header sum only); the
/// userspace receiver completes them before the TUN write, and leaves everything else alone.
/// </summary>
public sealed class PartialChecksumTests
{
    [Theory]
    [InlineData(false, Packets.Syn, 0)]
    [InlineData(true, Packets.Syn, 0)]
    [InlineData(false, Packets.Ack | Packets.Psh, 1400)]
    [InlineData(true, Packets.Ack | Packets.Psh, 1401)]
    public void A_TCP_segment_with_only_its_pseudo_header_sum_in_the_checksum_field_gets_its_real_checksum(bool v6, byte flags, int payload)
    {
        var complete = Packets.TcpSegment(v6, 1000, flags, Packets.Pattern(payload), options: Packets.Timestamps(1, 2));
        var packet = (byte[])complete.Clone();
        Packets.MakePartial(packet, Packets.Tcp);
        Assert.False(Packets.TransportChecksumValid(packet, Packets.Tcp));

        Assert.True(PartialChecksum.Complete(packet));

        Assert.Equal(complete, packet);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_UDP_datagram_with_a_partial_checksum_gets_its_real_checksum(bool v6)
    {
        var complete = Packets.UdpDatagram(v6, Packets.Pattern(333));
        var packet = (byte[])complete.Clone();
        Packets.MakePartial(packet, Packets.Udp);

        Assert.True(PartialChecksum.Complete(packet));

        Assert.Equal(complete, packet);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_packet_whose_checksum_is_right_is_left_as_it_is(bool v6)
    {
        var packet = Packets.TcpSegment(v6, 1000, Packets.Ack, Packets.Pattern(100));
        var copy = (byte[])packet.Clone();

        Assert.False(PartialChecksum.Complete(packet));
        Assert.Equal(copy, packet);
    }

    [Fact]
    public void A_corrupted_packet_keeps_its_wrong_checksum_so_that_the_receiving_stack_still_drops_it()
    {
        var packet = Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(100));
        packet[^1] ^= 0x5A;
        var copy = (byte[])packet.Clone();

        Assert.False(PartialChecksum.Complete(packet));
        Assert.Equal(copy, packet);
        Assert.False(Packets.TransportChecksumValid(packet, Packets.Tcp));
    }

    [Fact]
    public void An_IPv4_UDP_datagram_without_a_checksum_keeps_none()
    {
        var packet = Packets.UdpDatagram(false, Packets.Pattern(40));
        packet[20 + 6] = 0;
        packet[20 + 7] = 0;
        var copy = (byte[])packet.Clone();

        Assert.False(PartialChecksum.Complete(packet));
        Assert.Equal(copy, packet);
    }

    [Fact]
    public void A_fragment_and_a_packet_shorter_than_its_length_field_are_left_alone()
    {
        var fragment = Packets.TcpSegment(false, 1000, Packets.Ack, Packets.Pattern(100));
        Packets.MakePartial(fragment, Packets.Tcp);
        fragment[6] |= 0x20; // more fragments
        var copy = (byte[])fragment.Clone();
        Assert.False(PartialChecksum.Complete(fragment));
        Assert.Equal(copy, fragment);

        var truncated = Packets.TcpSegment(true, 1000, Packets.Ack, Packets.Pattern(100));
        Packets.MakePartial(truncated, Packets.Tcp);
        Assert.False(PartialChecksum.Complete(truncated.AsSpan(0, truncated.Length - 1)));
    }
}
