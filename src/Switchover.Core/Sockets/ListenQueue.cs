using System.Globalization;

namespace Switchover.Sockets;

/// <summary>
/// Reads how many connections wait in a listening socket's accept queue, from /proc/net/tcp and /proc/net/tcp6
/// (for a socket in state LISTEN, rx_queue is the current accept backlog).
/// </summary>
internal static class ListenQueue
{
    private const string ListenState = "0A";

    /// <summary>The number of accepted-but-not-yet-taken connections queued on listeners bound to <paramref name="port"/>; null if none listens.</summary>
    public static int? Read(int port) => Read(port, ["/proc/net/tcp6", "/proc/net/tcp"]);

    internal static int? Read(int port, IEnumerable<string> files)
    {
        int? total = null;
        foreach (var file in files)
        {
            string[] lines;
            try
            {
                lines = File.ReadAllLines(file);
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                continue;
            }

            var queued = Parse(lines, port);
            if (queued is not null)
            {
                total = (total ?? 0) + queued;
            }
        }

        return total;
    }

    internal static int? Parse(IEnumerable<string> lines, int port)
    {
        int? total = null;
        foreach (var line in lines.Skip(1))
        {
            // "  0: 00000000000000000000000000000000:9C41 00000000000000000000000000000000:0000 0A 00000000:00000003 ..."
            var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 5 || fields[3] != ListenState)
            {
                continue;
            }

            var colon = fields[1].LastIndexOf(':');
            if (colon < 0 || int.Parse(fields[1].AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture) != port)
            {
                continue;
            }

            var queues = fields[4];
            var rx = queues[(queues.IndexOf(':', StringComparison.Ordinal) + 1)..];
            total = (total ?? 0) + int.Parse(rx, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }

        return total;
    }
}
