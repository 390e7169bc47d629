using System.Buffers.Binary;
using Switchover.Interop;

namespace Switchover.Sockets;

/// <summary>A listening TCP socket as sock_diag reports it: its family, port and accept queue.</summary>
internal readonly record struct ListenerInfo(byte Family, ushort Port, uint AcceptQueue, uint Backlog);

/// <summary>
/// sock_diag (NETLINK_SOCK_DIAG, linux/inet_diag.h): the dump request for the TCP listeners of one port, and the
/// inet_diag_msg it answers with. The kernel matches the port while it walks its listening hash and, asked only for
/// state LISTEN, never walks the established or TIME_WAIT sockets. Pure layouts; golden-tested.
/// </summary>
internal static class SockDiag
{
    public const byte AfInet = 2;
    public const byte AfInet6 = 10;

    private const ushort SockDiagByFamily = 20;
    private const byte IpprotoTcp = 6;
    private const int TcpListen = 10;

    /// <summary>sizeof(struct inet_diag_req_v2): family, protocol, ext, pad, states, then the 48-byte inet_diag_sockid.</summary>
    private const int RequestLength = 56;

    /// <summary>Offsets in struct inet_diag_msg: 4 bytes of family/state/timer/retrans, the sockid, then expires, rqueue, wqueue.</summary>
    private const int MessageLength = 72;

    private const int StateOffset = 1;
    private const int SourcePortOffset = 4;
    private const int RqueueOffset = 4 + 48 + 4;
    private const int WqueueOffset = RqueueOffset + 4;

    public static byte[] ListenersRequest(byte family, int port, uint sequence)
    {
        var request = new byte[RequestLength];
        request[0] = family;
        request[1] = IpprotoTcp;
        BinaryPrimitives.WriteUInt32LittleEndian(request.AsSpan(4), 1u << TcpListen);
        BinaryPrimitives.WriteUInt16BigEndian(request.AsSpan(8), (ushort)port);
        return new NetlinkMessageWriter(SockDiagByFamily, NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFDump, sequence).Raw(request).ToArray();
    }

    /// <summary>One answer of the dump; null when it is not a listener (the kernel sent only listeners, but check).</summary>
    public static ListenerInfo? ParseListener(ushort type, ReadOnlySpan<byte> payload)
    {
        if (type != SockDiagByFamily || payload.Length < MessageLength || payload[StateOffset] != TcpListen)
        {
            return null;
        }

        // For a listener, idiag_rqueue is sk_ack_backlog (connections waiting for accept) and idiag_wqueue the backlog limit.
        return new ListenerInfo(payload[0], BinaryPrimitives.ReadUInt16BigEndian(payload[SourcePortOffset..]),
            BinaryPrimitives.ReadUInt32LittleEndian(payload[RqueueOffset..]), BinaryPrimitives.ReadUInt32LittleEndian(payload[WqueueOffset..]));
    }
}
