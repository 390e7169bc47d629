using System.Buffers.Binary;
using Switchover.Interop;

namespace Switchover.Netfilter;

/// <summary>One conntrack entry, as much of it as the drain and status read.</summary>
internal readonly record struct ConntrackFlow(
    byte Family, byte Protocol, ushort OriginalDestinationPort, ushort ReplySourcePort, uint Mark, uint Status, byte? TcpState);

/// <summary>Which entries a count asks the kernel for.</summary>
/// <param name="Mark">Entries whose mark, within <paramref name="MarkMask"/>, is this (TPROXY'd flows), or null.</param>
/// <param name="ReplySourcePort">Entries whose reply comes from this port (the private port NAT sent them to), or null.</param>
/// <param name="OriginalDestinationPort">Entries opened to this port (the public port), or null.</param>
/// <param name="HalfOpenOnly">Only entries not yet assured, i.e. whose handshake has not completed: what the drain waits for.</param>
internal sealed record FlowFilter(uint? Mark = null, uint MarkMask = 0, int? ReplySourcePort = null, int? OriginalDestinationPort = null, bool HalfOpenOnly = false)
{
    /// <summary>Whether an entry the kernel returned really matches (a kernel without CTA_FILTER or status filters returns more).</summary>
    public bool Matches(in ConntrackFlow flow) =>
        flow.Protocol == CtNetlink.IpprotoTcp &&
        (Mark is not { } mark || (flow.Mark & MarkMask) == mark) &&
        (ReplySourcePort is not { } reply || flow.ReplySourcePort == reply) &&
        (OriginalDestinationPort is not { } dport || flow.OriginalDestinationPort == dport) &&
        (!HalfOpenOnly || (flow.Status & CtNetlink.IpsAssured) == 0);
}

/// <summary>
/// ctnetlink (NFNL_SUBSYS_CTNETLINK over NETLINK_NETFILTER, linux/netfilter/nfnetlink_conntrack.h): the dump request
/// of conntrack entries with the kernel's own filters, and the entries it answers with. Pure layouts; golden-tested.
/// </summary>
internal static class CtNetlink
{
    public const byte AfUnspec = 0;
    public const byte AfInet = 2;
    public const byte AfInet6 = 10;
    public const byte IpprotoTcp = 6;

    /// <summary>IPS_ASSURED: the kernel sets it when a TCP flow's handshake completes (SYN_RECV -> ESTABLISHED).</summary>
    public const uint IpsAssured = 1 << 2;

    private const ushort SubsysCtnetlink = 1;
    private const ushort MsgCtNew = 0;
    private const ushort MsgCtGet = 1;
    private const byte NfnetlinkV0 = 0;

    // enum ctattr_type
    private const ushort CtaTupleOrig = 1;
    private const ushort CtaTupleReply = 2;
    private const ushort CtaStatus = 3;
    private const ushort CtaProtoinfo = 4;
    private const ushort CtaMark = 8;
    private const ushort CtaZone = 18;
    private const ushort CtaMarkMask = 21;
    private const ushort CtaFilter = 25;
    private const ushort CtaStatusMask = 26;

    // enum ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_protoinfo(_tcp), ctattr_filter
    private const ushort CtaTupleIp = 1;
    private const ushort CtaTupleProto = 2;
    private const ushort CtaIpV4Src = 1;
    private const ushort CtaIpV4Dst = 2;
    private const ushort CtaProtoNum = 1;
    private const ushort CtaProtoSrcPort = 2;
    private const ushort CtaProtoDstPort = 3;
    private const ushort CtaProtoinfoTcp = 1;
    private const ushort CtaProtoinfoTcpState = 1;
    private const ushort CtaFilterReplyFlags = 2;

    // CTA_FILTER_F_* (net/netfilter/nf_internals.h)
    private const uint FilterProtoNum = 1 << 3;
    private const uint FilterProtoSrcPort = 1 << 4;

    /// <summary>NFNL_SUBSYS_CTNETLINK &lt;&lt; 8 | IPCTNL_MSG_CT_NEW: the type of each entry in a dump.</summary>
    public const ushort EntryMessageType = (SubsysCtnetlink << 8) | MsgCtNew;

    /// <summary>
    /// The families to dump for <paramref name="filter"/>: one dump of both (AF_UNSPEC) when only the mark and status
    /// are filtered; one per family for a tuple filter (CTA_FILTER needs the family).
    /// </summary>
    public static byte[] Families(FlowFilter filter) => filter.ReplySourcePort is null ? [AfUnspec] : [AfInet, AfInet6];

    /// <summary>IPCTNL_MSG_CT_GET with NLM_F_DUMP, carrying the filter the kernel applies while it walks its table.</summary>
    public static byte[] DumpRequest(FlowFilter filter, byte family, uint sequence)
    {
        var message = new NetlinkMessageWriter((SubsysCtnetlink << 8) | MsgCtGet, NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFDump, sequence)
            .Raw([family, NfnetlinkV0, 0, 0]);
        if (filter.Mark is { } mark)
        {
            message.U32BigEndian(CtaMark, mark).U32BigEndian(CtaMarkMask, filter.MarkMask);
        }

        if (filter.HalfOpenOnly)
        {
            // (status & IPS_ASSURED) == 0 (kernel 6.0+; older kernels ignore it and Matches filters here).
            message.U32BigEndian(CtaStatus, 0).U32BigEndian(CtaStatusMask, IpsAssured);
        }

        if (filter.ReplySourcePort is { } port && family != AfUnspec)
        {
            message.BeginNest(CtaTupleReply)
                .BeginNest(CtaTupleProto).U8(CtaProtoNum, IpprotoTcp).U16BigEndian(CtaProtoSrcPort, (ushort)port).EndNest()
                .EndNest();
            message.BeginNest(CtaFilter).U32(CtaFilterReplyFlags, FilterProtoNum | FilterProtoSrcPort).EndNest();
        }

        return message.ToArray();
    }

    /// <summary>
    /// IPCTNL_MSG_CT_GET of one entry, by the original tuple (and zone) the kernel gave for it in a dump: a hash lookup
    /// in the kernel, however large its table. With NLM_F_ACK, so the answer ends with an ack (or ENOENT: gone).
    /// </summary>
    public static byte[] LookupRequest(ReadOnlySpan<byte> entryPayload, uint sequence)
    {
        var message = new NetlinkMessageWriter((SubsysCtnetlink << 8) | MsgCtGet, NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFAck, sequence)
            .Raw([entryPayload.Length > 0 ? entryPayload[0] : AfUnspec, NfnetlinkV0, 0, 0]);
        var attributes = new NetlinkAttributes(entryPayload.Length >= 4 ? entryPayload[4..] : []);
        var tuple = false;
        while (attributes.MoveNext())
        {
            if (attributes.Type is CtaTupleOrig or CtaZone)
            {
                message.RawAttribute(attributes.Whole);
                tuple |= attributes.Type == CtaTupleOrig;
            }
        }

        return tuple ? message.ToArray() : throw new ArgumentException("The entry has no original tuple.", nameof(entryPayload));
    }

    /// <summary>
    /// A lookup of a flow that cannot exist (TCP 0.0.0.0:0 -> 0.0.0.0:0): the kernel answers ENOENT when ctnetlink
    /// works and this process may use it, EPERM when it may not. One hash lookup, where a dump would walk the table.
    /// </summary>
    public static byte[] ProbeRequest(uint sequence) =>
        new NetlinkMessageWriter((SubsysCtnetlink << 8) | MsgCtGet, NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFAck, sequence)
            .Raw([AfInet, NfnetlinkV0, 0, 0])
            .BeginNest(CtaTupleOrig)
            .BeginNest(CtaTupleIp).U32BigEndian(CtaIpV4Src, 0).U32BigEndian(CtaIpV4Dst, 0).EndNest()
            .BeginNest(CtaTupleProto).U8(CtaProtoNum, IpprotoTcp).U16BigEndian(CtaProtoSrcPort, 0).U16BigEndian(CtaProtoDstPort, 0).EndNest()
            .EndNest()
            .ToArray();

    /// <summary>Reads one entry of a dump (the payload after the nlmsghdr: nfgenmsg, then attributes).</summary>
    public static ConntrackFlow ParseEntry(ReadOnlySpan<byte> payload)
    {
        byte family = payload.Length > 0 ? payload[0] : (byte)0, protocol = 0;
        ushort dport = 0, replySport = 0;
        uint mark = 0, status = 0;
        byte? state = null;
        var attributes = new NetlinkAttributes(payload.Length >= 4 ? payload[4..] : []);
        while (attributes.MoveNext())
        {
            switch (attributes.Type)
            {
                case CtaTupleOrig:
                    (protocol, _, dport) = ReadTupleProto(attributes.Value);
                    break;
                case CtaTupleReply:
                    (_, replySport, _) = ReadTupleProto(attributes.Value);
                    break;
                case CtaStatus when attributes.Value.Length >= 4:
                    status = BinaryPrimitives.ReadUInt32BigEndian(attributes.Value);
                    break;
                case CtaMark when attributes.Value.Length >= 4:
                    mark = BinaryPrimitives.ReadUInt32BigEndian(attributes.Value);
                    break;
                case CtaProtoinfo:
                    state = ReadTcpState(attributes.Value);
                    break;
            }
        }

        return new ConntrackFlow(family, protocol, dport, replySport, mark, status, state);
    }

    private static (byte Protocol, ushort SourcePort, ushort DestinationPort) ReadTupleProto(ReadOnlySpan<byte> tuple)
    {
        var attributes = new NetlinkAttributes(tuple);
        while (attributes.MoveNext())
        {
            if (attributes.Type != CtaTupleProto)
            {
                continue;
            }

            byte protocol = 0;
            ushort sport = 0, dport = 0;
            var proto = new NetlinkAttributes(attributes.Value);
            while (proto.MoveNext())
            {
                switch (proto.Type)
                {
                    case CtaProtoNum when proto.Value.Length >= 1:
                        protocol = proto.Value[0];
                        break;
                    case CtaProtoSrcPort when proto.Value.Length >= 2:
                        sport = BinaryPrimitives.ReadUInt16BigEndian(proto.Value);
                        break;
                    case CtaProtoDstPort when proto.Value.Length >= 2:
                        dport = BinaryPrimitives.ReadUInt16BigEndian(proto.Value);
                        break;
                }
            }

            return (protocol, sport, dport);
        }

        return (0, 0, 0);
    }

    private static byte? ReadTcpState(ReadOnlySpan<byte> protoinfo)
    {
        var attributes = new NetlinkAttributes(protoinfo);
        while (attributes.MoveNext())
        {
            if (attributes.Type != CtaProtoinfoTcp)
            {
                continue;
            }

            var tcp = new NetlinkAttributes(attributes.Value);
            while (tcp.MoveNext())
            {
                if (tcp.Type == CtaProtoinfoTcpState && tcp.Value.Length >= 1)
                {
                    return tcp.Value[0];
                }
            }
        }

        return null;
    }
}
