using System.Buffers.Binary;
using System.Net;

namespace Switchover.Migration.Tests.Gre;

/// <summary>
/// Hand-built IPv4/IPv6 TCP and UDP packets for the offload tests, and an Internet checksum of its own (RFC 1071, the
/// plain big-endian word sum), independent of the one under test.
/// </summary>
internal static class Packets
{
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte Fin = 0x01;
    public const byte Syn = 0x02;
    public const byte Psh = 0x08;
    public const byte Ack = 0x10;

    public static readonly IPAddress Source4 = IPAddress.Parse("203.0.113.1");
    public static readonly IPAddress Destination4 = IPAddress.Parse("203.0.113.2");
    public static readonly IPAddress Source6 = IPAddress.Parse("2001:db8:200::1");
    public static readonly IPAddress Destination6 = IPAddress.Parse("2001:db8:200::2");

    /// <summary>The 12 bytes of options Linux sends on every segment: NOP, NOP, timestamps.</summary>
    public static byte[] Timestamps(uint value, uint echo)
    {
        var options = new byte[12];
        options[0] = 1;
        options[1] = 1;
        options[2] = 8;
        options[3] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(options.AsSpan(4), value);
        BinaryPrimitives.WriteUInt32BigEndian(options.AsSpan(8), echo);
        return options;
    }

    /// <summary>A TCP segment with correct IP and TCP checksums.</summary>
    public static byte[] TcpSegment(bool v6, uint sequence, byte flags, ReadOnlySpan<byte> payload, uint ack = 7777, ushort id = 100,
        byte[]? options = null, ushort sourcePort = 40000, ushort destinationPort = 5201, byte ttl = 64)
    {
        options ??= [];
        var tcp = new byte[20 + options.Length + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(tcp, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(2), destinationPort);
        BinaryPrimitives.WriteUInt32BigEndian(tcp.AsSpan(4), sequence);
        BinaryPrimitives.WriteUInt32BigEndian(tcp.AsSpan(8), ack);
        tcp[12] = (byte)((20 + options.Length) / 4 << 4);
        tcp[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(14), 512);
        options.CopyTo(tcp, 20);
        payload.CopyTo(tcp.AsSpan(20 + options.Length));
        return Wrap(v6, Tcp, tcp, 16, id, ttl);
    }

    public static byte[] UdpDatagram(bool v6, ReadOnlySpan<byte> payload, ushort id = 100)
    {
        var udp = new byte[8 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(udp, 40000);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(2), 53);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(4), (ushort)udp.Length);
        payload.CopyTo(udp.AsSpan(8));
        return Wrap(v6, Udp, udp, 6, id, 64);
    }

    public static byte[] Pattern(int length, int seed = 0) => Enumerable.Range(seed, length).Select(i => (byte)(i * 7 + (i >> 8))).ToArray();

    public static int IpHeaderLength(byte[] packet) => packet[0] >> 4 == 6 ? 40 : (packet[0] & 0x0F) * 4;

    public static bool IpChecksumValid(byte[] packet) => packet[0] >> 4 == 6 || Checksum(packet.AsSpan(0, IpHeaderLength(packet)), 0) == 0;

    /// <summary>The transport checksum over the pseudo-header and the segment checks out.</summary>
    public static bool TransportChecksumValid(byte[] packet, byte protocol) =>
        Checksum(packet.AsSpan(IpHeaderLength(packet)), PseudoHeaderSum(packet, protocol, packet.Length - IpHeaderLength(packet))) == 0;

    /// <summary>RFC 1071: the one's complement of the one's complement sum of the big-endian 16-bit words.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data, uint initial)
    {
        var sum = initial;
        for (var i = 0; i < data.Length; i += 2)
        {
            sum += (uint)(data[i] << 8 | (i + 1 < data.Length ? data[i + 1] : 0));
        }

        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    public static uint PseudoHeaderSum(byte[] packet, byte protocol, int length)
    {
        var v6 = packet[0] >> 4 == 6;
        var addresses = v6 ? packet.AsSpan(8, 32) : packet.AsSpan(12, 8);
        uint sum = protocol + (uint)length;
        for (var i = 0; i < addresses.Length; i += 2)
        {
            sum += (uint)(addresses[i] << 8 | addresses[i + 1]);
        }

        return sum;
    }

    /// <summary>
    /// What the kernel hands a TUN reader for CHECKSUM_PARTIAL: the transport checksum field holds the folded
    /// pseudo-header sum (not complemented).
    /// </summary>
    public static void MakePartial(byte[] packet, byte protocol)
    {
        var at = IpHeaderLength(packet) + (protocol == Tcp ? 16 : 6);
        var sum = PseudoHeaderSum(packet, protocol, packet.Length - IpHeaderLength(packet));
        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(at), (ushort)sum);
    }

    private static byte[] Wrap(bool v6, byte protocol, byte[] transport, int checksumOffset, ushort id, byte ttl)
    {
        byte[] packet;
        if (v6)
        {
            packet = new byte[40 + transport.Length];
            packet[0] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)transport.Length);
            packet[6] = protocol;
            packet[7] = ttl;
            Source6.TryWriteBytes(packet.AsSpan(8, 16), out _);
            Destination6.TryWriteBytes(packet.AsSpan(24, 16), out _);
            transport.CopyTo(packet, 40);
        }
        else
        {
            packet = new byte[20 + transport.Length];
            packet[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), id);
            packet[6] = 0x40; // DF
            packet[8] = ttl;
            packet[9] = protocol;
            Source4.TryWriteBytes(packet.AsSpan(12, 4), out _);
            Destination4.TryWriteBytes(packet.AsSpan(16, 4), out _);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(10), Checksum(packet.AsSpan(0, 20), 0));
            transport.CopyTo(packet, 20);
        }

        var ip = v6 ? 40 : 20;
        var check = Checksum(packet.AsSpan(ip), PseudoHeaderSum(packet, protocol, transport.Length));
        if (protocol == Udp && check == 0)
        {
            check = 0xFFFF;
        }

        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(ip + checksumOffset), check);
        return packet;
    }
}
