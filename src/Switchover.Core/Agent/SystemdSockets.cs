using System.Globalization;
using System.Net.Sockets;
using Switchover.Interop;

namespace Switchover.Agent;

/// <summary>
/// sd_listen_fds(3) without libsystemd: the sockets systemd passed a socket-activated service, descriptors 3 to
/// 3 + LISTEN_FDS - 1, meant for this process only when LISTEN_PID is its pid. The variables are removed once read
/// (unset_environment=1), so that the programs this process starts do not take the sockets for theirs, and the
/// descriptors are made close-on-exec.
/// </summary>
internal static class SystemdSockets
{
    private const int FirstDescriptor = 3;

    public static IReadOnlyList<Socket> Take() =>
        Take(Environment.GetEnvironmentVariable("LISTEN_PID"), Environment.GetEnvironmentVariable("LISTEN_FDS"), Environment.ProcessId, unset: true);

    // internal for testing
    internal static IReadOnlyList<Socket> Take(string? listenPid, string? listenFds, int self, bool unset)
    {
        if (unset)
        {
            Environment.SetEnvironmentVariable("LISTEN_PID", null);
            Environment.SetEnvironmentVariable("LISTEN_FDS", null);
            Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        }

        if (!int.TryParse(listenPid, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid != self
            || !int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out var count) || count <= 0)
        {
            return [];
        }

        var sockets = new List<Socket>();
        for (var fd = FirstDescriptor; fd < FirstDescriptor + count; fd++)
        {
            Libc.SetCloseOnExec(fd);
            sockets.Add(new Socket(new SafeSocketHandle(fd, ownsHandle: true)));
        }

        return sockets;
    }
}
