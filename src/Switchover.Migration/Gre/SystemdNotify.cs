using System.Net.Sockets;
using System.Text;

namespace Switchover.Migration.Gre;

/// <summary>
/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, which systemd sets for Type=notify services. A
/// no-op outside systemd. A leading '@' names an abstract socket.
/// </summary>
internal static class SystemdNotify
{
    public static bool Send(string state)
    {
        var path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path))
        {
            return false;
        }

        if (path[0] == '@')
        {
            path = "\0" + path[1..];
        }

        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.SendTo(Encoding.UTF8.GetBytes(state), new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            // systemd went away or the variable is stale; the service works the same.
            return false;
        }
    }
}
