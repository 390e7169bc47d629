using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Switchover.Migration.Gre;

/// <summary>
/// Userspace GRO for one batch of decapsulated packets on their way to a TUN device with IFF_VNET_HDR: consecutive
/// TCP segments of one flow are merged into a super-packet that the kernel takes in one write, with a virtio_net_hdr
/// saying GSO TCPV4/TCPV6, gso_size and a partial checksum. The rules are tcp_gro_receive's, in-order only:
/// <list type="bullet">
/// <item>a candidate is IPv4 without options or fragmentation, or IPv6 without extension headers, carrying TCP with
///   payload and the flags ACK or ACK|PSH exactly; lengths must agree with the packet;</item>
/// <item>it joins the most recent super-packet of its flow (addresses and ports) if that one has the same ACK number,
///   TCP header length and options, IPv4 TOS, TTL and DF (IPv6 first word and hop limit), ends where this one starts
///   (sequence), has no PSH yet, no short last segment, a segment size at least this payload's, and room;</item>
/// <item>every segment's TCP checksum is verified before it is merged (the kernel will not check a partial checksum);
///   one that fails is left alone, and the kernel drops it;</item>
/// <item>any other TCP packet of the flow (SYN, FIN, RST, a pure ACK) ends its super-packet, so nothing is reordered
///   within a flow; packets keep their order, a super-packet taking the place of its first segment.</item>
/// </list>
/// The packets stay in the caller's buffers: a merged payload is copied behind its super-packet's head, whose buffer
/// needs <see cref="MaxLength"/> bytes of room, and <see cref="VirtioNetHeader.Size"/> bytes of room in front for the
/// header. Packets may share a buffer, in order (the datagrams of one UDP GRO read): a super-packet then grows only
/// up to the next packet that is an entry of its own, so segments of two flows interleaved in one buffer are passed
/// on as they came. Allocation-free after construction. Not thread-safe: one per receive loop.
/// </summary>
internal sealed unsafe class TcpCoalescer
{
    /// <summary>The longest super-packet: the IPv4 total length field's limit.</summary>
    public const int MaxLength = 65535;

    private const byte ProtocolTcp = 6;
    private const byte TcpAck = 0x10;
    private const byte TcpPsh = 0x08;

    private readonly Entry[] _entries;

    public TcpCoalescer(int capacity) => _entries = new Entry[capacity];

    /// <summary>Packets (and super-packets) of this batch so far, in order.</summary>
    public int Count { get; private set; }

    /// <summary>Packets a batch can hold.</summary>
    public int Capacity => _entries.Length;

    /// <summary>Starts a new batch.</summary>
    public void Reset() => Count = 0;

    /// <summary>
    /// Offers the next packet of the batch: <paramref name="length"/> bytes at <paramref name="packet"/>, with
    /// <paramref name="capacity"/> bytes usable from there. True when it was merged into an earlier super-packet (its
    /// buffer is free again); false when it is an entry of its own.
    /// </summary>
    public bool Add(byte* packet, int length, int capacity)
    {
        if (Count == _entries.Length)
        {
            throw new InvalidOperationException($"The coalescer holds {_entries.Length} packets; Reset it after each batch.");
        }

        var kind = Classify(packet, length, out var ipHeaderLength, out var tcpHeaderLength);
        if (kind == Kind.Candidate)
        {
            var payload = length - ipHeaderLength - tcpHeaderLength;
            var tail = FindTail(packet);
            if (tail >= 0 && TryAppend(ref _entries[tail], packet, length, ipHeaderLength, tcpHeaderLength, payload))
            {
                return true;
            }

            Bound(packet);
            _entries[Count++] = new Entry
            {
                Packet = packet,
                Length = length,
                Capacity = Math.Min(capacity, MaxLength),
                IpHeaderLength = ipHeaderLength,
                TcpHeaderLength = tcpHeaderLength,
                GsoSize = payload,
                Segments = 1,
                Bytes = length,
                NextSequence = unchecked(Sequence(packet, ipHeaderLength) + (uint)payload),
                Pushed = (packet[ipHeaderLength + 13] & TcpPsh) != 0,
                Open = true,
            };
            return false;
        }

        if (kind == Kind.OtherTcp && ipHeaderLength + 4 <= length)
        {
            var tail = FindTail(packet);
            if (tail >= 0)
            {
                _entries[tail].Open = false;
            }
        }

        Bound(packet);
        _entries[Count++] = new Entry { Packet = packet, Length = length, Segments = 1, Bytes = length };
        return false;
    }

    /// <summary>Adds a packet that is written as it is (coalescing off).</summary>
    public void AddAlone(byte* packet, int length)
    {
        if (Count == _entries.Length)
        {
            throw new InvalidOperationException($"The coalescer holds {_entries.Length} packets; Reset it after each batch.");
        }

        _entries[Count++] = new Entry { Packet = packet, Length = length, Segments = 1, Bytes = length };
    }

    /// <summary>
    /// Finishes entry <paramref name="index"/>: writes its virtio_net_hdr in the <see cref="VirtioNetHeader.Size"/>
    /// bytes before it and, for a super-packet, its IP length, IPv4 header checksum and the TCP pseudo-header sum.
    /// Returns where the write to the TUN device starts and how long it is, and the segments and inner bytes it holds.
    /// </summary>
    public (IntPtr Start, int Length, int Segments, int Bytes) Finish(int index)
    {
        ref var entry = ref _entries[index];
        var p = entry.Packet;
        var header = (VirtioNetHeader*)(p - VirtioNetHeader.Size);
        *header = default;
        if (entry.Segments > 1)
        {
            var packet = new Span<byte>(p, entry.Length);
            var v6 = p[0] >> 4 == 6;
            var iph = entry.IpHeaderLength;
            if (v6)
            {
                BinaryPrimitives.WriteUInt16BigEndian(packet[4..], (ushort)(entry.Length - 40));
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(packet[2..], (ushort)entry.Length);
                packet[10] = 0;
                packet[11] = 0;
                MemoryMarshal.Write(packet[10..], (ushort)~InternetChecksum.Sum(packet[..iph]));
            }

            var addresses = v6 ? packet.Slice(8, 32) : packet.Slice(12, 8);
            MemoryMarshal.Write(packet[(iph + 16)..], InternetChecksum.Fold(InternetChecksum.PseudoHeader(addresses, ProtocolTcp, entry.Length - iph)));
            header->Flags = VirtioNetHeader.FlagNeedsCsum;
            header->GsoType = v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4;
            header->HeaderLength = (ushort)(iph + entry.TcpHeaderLength);
            header->GsoSize = (ushort)entry.GsoSize;
            header->CsumStart = (ushort)iph;
            header->CsumOffset = 16;
        }

        return ((IntPtr)header, entry.Length + VirtioNetHeader.Size, entry.Segments, entry.Bytes);
    }

    /// <summary>
    /// Several packets may share one buffer (datagrams that the kernel's UDP GRO merged into one read): a super-packet
    /// must not grow over the next packet that is an entry of its own, so the entry before it ends where it starts.
    /// </summary>
    private void Bound(byte* packet)
    {
        if (Count > 0)
        {
            ref var previous = ref _entries[Count - 1];
            if (previous.Packet < packet && packet < previous.Packet + previous.Capacity)
            {
                previous.Capacity = (int)(packet - previous.Packet);
            }
        }
    }

    private static uint Sequence(byte* packet, int ipHeaderLength) =>
        BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(packet + ipHeaderLength + 4, 4));

    private static Kind Classify(byte* p, int length, out int ipHeaderLength, out int tcpHeaderLength)
    {
        ipHeaderLength = 0;
        tcpHeaderLength = 0;
        if (length < 40)
        {
            return Kind.Other;
        }

        var packet = new ReadOnlySpan<byte>(p, length);
        var version = packet[0] >> 4;
        if (version == 4)
        {
            if (packet[9] != ProtocolTcp)
            {
                return Kind.Other;
            }

            ipHeaderLength = (packet[0] & 0x0F) * 4;
            var fragment = BinaryPrimitives.ReadUInt16BigEndian(packet[6..]) & 0x3FFF; // MF and the offset
            if (ipHeaderLength != 20 || BinaryPrimitives.ReadUInt16BigEndian(packet[2..]) != length || fragment != 0)
            {
                return Kind.OtherTcp;
            }
        }
        else if (version == 6)
        {
            if (length < 60 || packet[6] != ProtocolTcp)
            {
                return Kind.Other;
            }

            ipHeaderLength = 40;
            if (BinaryPrimitives.ReadUInt16BigEndian(packet[4..]) + 40 != length)
            {
                return Kind.OtherTcp;
            }
        }
        else
        {
            return Kind.Other;
        }

        tcpHeaderLength = (packet[ipHeaderLength + 12] >> 4) * 4;
        var flags = packet[ipHeaderLength + 13];
        if (tcpHeaderLength < 20 || ipHeaderLength + tcpHeaderLength >= length || (flags != TcpAck && flags != (TcpAck | TcpPsh)))
        {
            return Kind.OtherTcp;
        }

        return Kind.Candidate;
    }

    /// <summary>The most recent entry of this packet's flow (same addresses and ports), or -1.</summary>
    private int FindTail(byte* packet)
    {
        var v6 = packet[0] >> 4 == 6;
        var addressesAt = v6 ? 8 : 12;
        var addressLength = v6 ? 32 : 8;
        var ports = v6 ? 40 : (packet[0] & 0x0F) * 4;
        var addresses = new ReadOnlySpan<byte>(packet + addressesAt, addressLength);
        var portPair = *(uint*)(packet + ports);
        for (var i = Count - 1; i >= 0; i--)
        {
            ref var entry = ref _entries[i];
            var other = entry.Packet;
            if (entry.IpHeaderLength == 0 || other[0] >> 4 != packet[0] >> 4)
            {
                continue;
            }

            if (*(uint*)(other + entry.IpHeaderLength) == portPair && addresses.SequenceEqual(new ReadOnlySpan<byte>(other + addressesAt, addressLength)))
            {
                return i;
            }
        }

        return -1;
    }

    private static bool TryAppend(ref Entry entry, byte* packet, int length, int ipHeaderLength, int tcpHeaderLength, int payload)
    {
        var head = entry.Packet;
        if (!entry.Open || entry.Pushed || entry.ShortTail || payload > entry.GsoSize ||
            entry.TcpHeaderLength != tcpHeaderLength || entry.Length + payload > entry.Capacity ||
            Sequence(packet, ipHeaderLength) != entry.NextSequence)
        {
            return false;
        }

        // The ACK number, and the options (timestamps) byte for byte.
        var t = ipHeaderLength;
        if (*(uint*)(packet + t + 8) != *(uint*)(head + t + 8) ||
            !new ReadOnlySpan<byte>(packet + t + 20, tcpHeaderLength - 20).SequenceEqual(new ReadOnlySpan<byte>(head + t + 20, tcpHeaderLength - 20)))
        {
            return false;
        }

        if (ipHeaderLength == 40)
        {
            if (*(uint*)packet != *(uint*)head || packet[7] != head[7])
            {
                return false;
            }
        }
        else if (packet[1] != head[1] || packet[8] != head[8] || (packet[6] & 0xE0) != (head[6] & 0xE0))
        {
            return false;
        }

        if (!entry.Verified)
        {
            if (!TcpChecksumValid(head, entry.Length, ipHeaderLength))
            {
                entry.Open = false;
                return false;
            }

            entry.Verified = true;
        }

        if (!TcpChecksumValid(packet, length, ipHeaderLength))
        {
            return false;
        }

        // The flags first: in a shared buffer (a UDP GRO read) the payload may be moved over this packet's own headers.
        var pushed = (packet[t + 13] & TcpPsh) != 0;
        new ReadOnlySpan<byte>(packet + ipHeaderLength + tcpHeaderLength, payload).CopyTo(new Span<byte>(head + entry.Length, payload));
        entry.Length += payload;
        entry.Bytes += length;
        entry.Segments++;
        entry.NextSequence = unchecked(entry.NextSequence + (uint)payload);
        entry.ShortTail = payload < entry.GsoSize;
        if (pushed)
        {
            entry.Pushed = true;
            head[t + 13] |= TcpPsh;
        }

        return true;
    }

    private static bool TcpChecksumValid(byte* p, int length, int ipHeaderLength)
    {
        var packet = new ReadOnlySpan<byte>(p, length);
        var addresses = ipHeaderLength == 40 ? packet.Slice(8, 32) : packet.Slice(12, 8);
        var sum = InternetChecksum.PseudoHeader(addresses, ProtocolTcp, length - ipHeaderLength);
        return InternetChecksum.Fold(InternetChecksum.Accumulate(packet[ipHeaderLength..], sum)) == 0xFFFF;
    }

    private enum Kind
    {
        /// <summary>Not TCP: passes through.</summary>
        Other,

        /// <summary>TCP that cannot be merged (SYN, FIN, RST, no payload, options in IP): ends its flow's super-packet.</summary>
        OtherTcp,

        Candidate,
    }

    private struct Entry
    {
        public byte* Packet;
        public int Length;
        public int Capacity;

        /// <summary>0 for a packet that is not a candidate.</summary>
        public int IpHeaderLength;
        public int TcpHeaderLength;
        public int GsoSize;
        public int Segments;
        public int Bytes;
        public uint NextSequence;
        public bool Pushed;
        public bool ShortTail;
        public bool Open;
        public bool Verified;
    }
}
