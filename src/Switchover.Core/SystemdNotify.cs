using System.Net.Sockets;
using System.Text;

namespace Switchover;

/// <summary>
/// sd_notify(3) for the tool's own processes, without libsystemd: one datagram to $NOTIFY_SOCKET, a no-op outside a
/// service manager; a leading '@' names an abstract socket. Deploy speaks only when the generation it launched could
/// not (then a reload it had announced with RELOADING=1 must still end with READY=1 and the pid that serves); the
/// agent and the tunnel agent say READY and STOPPING. Written here rather than through
/// Microsoft.Extensions.Hosting.Systemd's notifier (which the generations use): that package brings
/// Microsoft.Extensions.Hosting and its dependencies into a tool that has no host.
/// </summary>
internal static class SystemdNotify
{
    /// <summary>True when deploy runs under a service manager that listens for notifications (NOTIFY_SOCKET is set).</summary>
    public static bool IsEnabled => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NOTIFY_SOCKET"));

    /// <summary>Sends one notification; false when there is no NOTIFY_SOCKET or it cannot be reached.</summary>
    public static bool TrySend(string message, string? socketPath = null)
    {
        var path = socketPath ?? Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path))
        {
            return false;
        }

        // A leading '@' names a socket in the abstract namespace, as sd_notify(3) defines it.
        if (path[0] == '@')
        {
            path = "\0" + path[1..];
        }

        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.Send(Encoding.UTF8.GetBytes(message));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
