using Switchover.Interop;
using Switchover.Netfilter;
using Switchover.Sockets;

namespace Switchover.Tests;

/// <summary>
/// The netlink messages Switchover sends and reads, byte for byte. The expected requests are what conntrack(8) and
/// ss(8) send for the same question (strace -xx), or the kernel's uapi layout where they ask differently; the answers
/// are real kernel answers captured with strace in a namespace (a loopback connection marked 0x00040000).
/// </summary>
public sealed class NetlinkLayoutTests
{
    private const uint Sequence = 0x01020304;

    [Fact]
    public void A_mark_dump_request_is_what_conntrack_sends_for_mark_and_mask()
    {
        var request = CtNetlink.DumpRequest(new FlowFilter(0x00040000, 0x00ff0000), CtNetlink.AfUnspec, Sequence);

        // conntrack -L -p tcp --mark 0x40000/0xff0000: nlmsghdr (36 bytes, CT_GET 0x0101, REQUEST|DUMP 0x0301),
        // nfgenmsg AF_UNSPEC, CTA_MARK (8) and CTA_MARK_MASK (0x15), both big-endian.
        Assert.Equal(
            "24000000" + "0101" + "0103" + "04030201" + "00000000" +
            "00000000" +
            "0800" + "0800" + "00040000" +
            "0800" + "1500" + "00ff0000",
            Convert.ToHexStringLower(request));
    }

    [Fact]
    public void A_half_open_dump_asks_the_kernel_for_entries_that_are_not_assured()
    {
        var request = CtNetlink.DumpRequest(new FlowFilter(0x00040000, 0x00ff0000, HalfOpenOnly: true), CtNetlink.AfUnspec, Sequence);

        // ... then CTA_STATUS (3) = 0 and CTA_STATUS_MASK (0x1a) = IPS_ASSURED (4): (status & ASSURED) == 0.
        Assert.EndsWith("0800" + "0300" + "00000000" + "0800" + "1a00" + "00000004", Convert.ToHexStringLower(request), StringComparison.Ordinal);
        Assert.Equal(52, request.Length);
    }

    [Fact]
    public void A_reply_port_dump_filters_the_reply_tuple_in_the_kernel_one_family_at_a_time()
    {
        var filter = new FlowFilter(ReplySourcePort: 40001);
        Assert.Equal([CtNetlink.AfInet, CtNetlink.AfInet6], CtNetlink.Families(filter));

        var request = CtNetlink.DumpRequest(filter, CtNetlink.AfInet6, Sequence);

        // nfgenmsg AF_INET6; CTA_TUPLE_REPLY (nested 0x8002) { CTA_TUPLE_PROTO (nested 0x8002) { CTA_PROTO_NUM 6,
        // CTA_PROTO_SRC_PORT 40001 big-endian } }; CTA_FILTER (nested 0x8019) { CTA_FILTER_REPLY_FLAGS (2) =
        // CTA_FILTER_F_CTA_PROTO_NUM | CTA_FILTER_F_CTA_PROTO_SRC_PORT (0x18), host order }.
        Assert.Equal(
            "38000000" + "0101" + "0103" + "04030201" + "00000000" +
            "0a000000" +
            "1800" + "0280" + "1400" + "0280" + "0500" + "0100" + "06000000" + "0600" + "0200" + "9c410000" +
            "0c00" + "1980" + "0800" + "0200" + "18000000",
            Convert.ToHexStringLower(request));
    }

    [Fact]
    public void A_conntrack_entry_from_the_kernel_gives_its_ports_mark_status_and_tcp_state()
    {
        // nfgenmsg AF_INET, CTA_TUPLE_ORIG 127.0.0.1:48774 -> 127.0.0.1:40001 tcp, CTA_TUPLE_REPLY, CTA_STATUS 0x0e,
        // CTA_MARK 0x00040000, CTA_ID, CTA_USE, CTA_TIMEOUT, CTA_PROTOINFO { TCP { state 3 (ESTABLISHED), ... } }.
        var payload = Convert.FromHexString(string.Concat(
            "02000000",
            "34000180", "1400018008000100", "7f000001", "08000200", "7f000001", "1c000280050001000600000006000200be860000060003009c410000",
            "34000280", "1400018008000100", "7f000001", "08000200", "7f000001", "1c0002800500010006000000060002009c41000006000300be860000",
            "080003000000000e", "0800080000040000", "08000c003bf7849b", "08000b0000000001", "080007000006977f",
            "30000480", "2c000180", "0500010003000000", "050002000a000000", "050003000a000000", "0600040023000000", "0600050023000000"));

        var flow = CtNetlink.ParseEntry(payload);

        Assert.Equal(new ConntrackFlow(CtNetlink.AfInet, CtNetlink.IpprotoTcp, 40001, 40001, 0x00040000, 0x0e, 3), flow);
        Assert.True(new FlowFilter(0x00040000, 0x00ff0000, OriginalDestinationPort: 40001).Matches(flow));
        Assert.False(new FlowFilter(0x00050000, 0x00ff0000).Matches(flow));
        Assert.False(new FlowFilter(0x00040000, 0x00ff0000, HalfOpenOnly: true).Matches(flow), "An assured entry is not half-open.");
        Assert.False(new FlowFilter(ReplySourcePort: 40002).Matches(flow));
    }

    [Fact]
    public void A_lookup_asks_again_about_one_entry_by_the_original_tuple_the_kernel_gave()
    {
        var payload = Convert.FromHexString(string.Concat(
            "02000000",
            "34000180", "1400018008000100", "7f000001", "08000200", "7f000001", "1c000280050001000600000006000200be860000060003009c410000",
            "34000280", "1400018008000100", "7f000001", "08000200", "7f000001", "1c0002800500010006000000060002009c41000006000300be860000",
            "080003000000000e", "0800080000040000"));

        var request = CtNetlink.LookupRequest(payload, Sequence);

        // nlmsghdr (72 bytes, CT_GET, REQUEST|ACK 0x0005), nfgenmsg AF_INET, then the CTA_TUPLE_ORIG attribute as it came.
        Assert.Equal(
            "48000000" + "0101" + "0500" + "04030201" + "00000000" + "02000000" +
            "34000180" + "1400018008000100" + "7f000001" + "08000200" + "7f000001" + "1c000280050001000600000006000200be860000060003009c410000",
            Convert.ToHexStringLower(request));
    }

    [Fact]
    public void The_startup_check_looks_up_a_flow_that_cannot_exist_instead_of_dumping_the_table()
    {
        // CT_GET, REQUEST|ACK, AF_INET; CTA_TUPLE_ORIG { CTA_TUPLE_IP { V4_SRC 0, V4_DST 0 }, CTA_TUPLE_PROTO { tcp, ports 0 } }.
        Assert.Equal(
            "48000000" + "0101" + "0500" + "04030201" + "00000000" + "02000000" +
            "3400" + "0180" + "1400" + "0180" + "0800" + "0100" + "00000000" + "0800" + "0200" + "00000000" +
            "1c00" + "0280" + "0500" + "0100" + "06000000" + "0600" + "0200" + "00000000" + "0600" + "0300" + "00000000",
            Convert.ToHexStringLower(CtNetlink.ProbeRequest(Sequence)));
    }

    [Fact]
    public void Tcp_states_are_counted_as_established_half_open_or_closing()
    {
        // SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, TIME_WAIT, SYN_SENT2, no state.
        Assert.Equal(new FlowCounts(1, 3, 3), ConntrackClient.Classify([1, 2, 3, 4, 7, 9, null]));
    }

    [Fact]
    public void A_listener_dump_request_names_tcp_state_listen_and_the_port()
    {
        var request = SockDiag.ListenersRequest(SockDiag.AfInet, 40001, Sequence);

        // nlmsghdr (72 bytes, SOCK_DIAG_BY_FAMILY 20, REQUEST|DUMP), inet_diag_req_v2 { AF_INET, IPPROTO_TCP, ext 0,
        // pad, states 1 << TCP_LISTEN, sockid { sport 40001 big-endian, everything else 0 } }.
        Assert.Equal(
            "48000000" + "1400" + "0103" + "04030201" + "00000000" +
            "02" + "06" + "00" + "00" + "00040000" + "9c41" + new string('0', 92),
            Convert.ToHexStringLower(request));
    }

    [Fact]
    public void A_listener_from_the_kernel_gives_its_accept_queue()
    {
        // inet_diag_msg { AF_INET, TCP_LISTEN, 0, 0, sockid { 127.0.0.1:40001 }, expires 0, rqueue 1, wqueue 8, uid 0, inode }.
        var payload = Convert.FromHexString(
            "020a0000" + "9c410000" + "7f000001" + new string('0', 24) + new string('0', 32) + "00000000" + "2600000000000000" +
            "00000000" + "01000000" + "08000000" + "00000000" + "a7e44f01");

        Assert.Equal(new ListenerInfo(SockDiag.AfInet, 40001, 1, 8), SockDiag.ParseListener(20, payload));
        Assert.Null(SockDiag.ParseListener(20, payload.AsSpan(0, 40)));
    }

    [Fact]
    public void An_error_answer_carries_the_kernels_errno_and_done_ends_the_dump()
    {
        var seen = new List<ushort>();
        byte[] entry = [.. Header(20, 0x0100, Sequence), 1, 2, 3, 4];
        byte[] other = [.. Header(20, 0x0100, Sequence + 1), 9, 9, 9, 9];
        byte[] done = [.. Header(20, NetlinkSocket.NlmsgDone, Sequence), 0, 0, 0, 0];

        Assert.False(NetlinkSocket.Walk([.. entry, .. other], Sequence, (type, _) => seen.Add(type)));
        Assert.True(NetlinkSocket.Walk(done, Sequence, (type, _) => seen.Add(type)));
        Assert.Equal([(ushort)0x0100], seen);

        // NLMSG_ERROR with -EPERM, then the request's header.
        byte[] error = [.. Header(36, NetlinkSocket.NlmsgError, Sequence), 0xff, 0xff, 0xff, 0xff, .. Header(16, 0x0101, Sequence)];
        var e = Assert.Throws<NetlinkException>(() => NetlinkSocket.Walk(error, Sequence, (_, _) => { }));
        Assert.True(e.NotPermitted);
        Assert.Contains("errno 1", e.Message, StringComparison.Ordinal);
    }

    private static byte[] Header(uint length, ushort type, uint sequence)
    {
        var header = new byte[16];
        BitConverter.TryWriteBytes(header.AsSpan(0), length);
        BitConverter.TryWriteBytes(header.AsSpan(4), type);
        BitConverter.TryWriteBytes(header.AsSpan(8), sequence);
        return header;
    }
}
