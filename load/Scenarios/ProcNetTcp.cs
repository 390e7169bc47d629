using System.Globalization;

namespace Switchover.Load.Scenarios;

/// <summary>
/// The accept-queue reader Switchover used before sock_diag, kept only as the kernel scenario's baseline: it reads
/// every line of /proc/net/tcp and /proc/net/tcp6 (TIME_WAIT sockets included) to find the listeners of one port.
/// (thread-self: the calling thread's namespace, which is the lab's on a <see cref="Native.NamespaceWorker"/>.)
/// </summary>
internal static class ProcNetTcp
{
    public static int? Read(int port)
    {
        int? total = null;
        foreach (var file in new[] { "/proc/thread-self/net/tcp6", "/proc/thread-self/net/tcp" })
        {
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length < 5 || fields[3] != "0A")
                {
                    continue;
                }

                var colon = fields[1].LastIndexOf(':');
                if (colon < 0 || int.Parse(fields[1].AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture) != port)
                {
                    continue;
                }

                var queues = fields[4];
                total = (total ?? 0) + int.Parse(queues.AsSpan(queues.IndexOf(':', StringComparison.Ordinal) + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            }
        }

        return total;
    }
}
