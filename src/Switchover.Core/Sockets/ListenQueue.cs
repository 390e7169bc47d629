using Switchover.Interop;

namespace Switchover.Sockets;

/// <summary>
/// How many connections wait in the accept queues of the TCP listeners on a port, asked of the kernel through
/// sock_diag: one dump per address family, each visiting only that port's listeners, so a poll costs the same
/// with ten thousand open connections as with none (parsing /proc/net/tcp read every socket, TIME_WAIT included).
/// </summary>
internal static class ListenQueue
{
    /// <summary>
    /// The number of accepted-but-not-yet-taken connections queued on listeners bound to <paramref name="port"/>; null
    /// if none listens, or if sock_diag cannot be asked (a kernel without inet_diag: then the drain relies on conntrack
    /// and its quiet period, as it did when /proc/net/tcp was missing).
    /// </summary>
    public static int? Read(int port)
    {
        try
        {
            return ReadOrThrow(port);
        }
        catch (NetlinkException)
        {
            return null;
        }
    }

    /// <param name="open">Opens the sock_diag socket (tests open it in a namespace); default: in this process's namespace.</param>
    internal static int? ReadOrThrow(int port, Func<int, NetlinkSocket>? open = null)
    {
        int? total = null;
        using var socket = (open ?? NetlinkSocket.Open)(NetlinkSocket.NetlinkSockDiag);
        foreach (var family in (ReadOnlySpan<byte>)[SockDiag.AfInet, SockDiag.AfInet6])
        {
            try
            {
                socket.Dump(SockDiag.ListenersRequest(family, port, NetlinkSocket.NextSequence()), (type, payload) =>
                {
                    if (SockDiag.ParseListener(type, payload) is { } listener && listener.Port == port)
                    {
                        total = (total ?? 0) + (int)listener.AcceptQueue;
                    }
                }, CancellationToken.None);
            }
            catch (NetlinkException e) when (family == SockDiag.AfInet6 && e.Errno == 2)
            {
                // ENOENT: this kernel has no IPv6 (no sock_diag handler for AF_INET6); nothing listens there.
            }
        }

        return total;
    }
}
