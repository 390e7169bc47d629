using System.Globalization;

namespace Switchover.Agent;

/// <summary>
/// Whether a process holds a listening TCP socket on a port: the agent guards and redirects only ports the
/// registering generation really listens on, so that no one can have the guard drop another service's port, or
/// steer a public port to a listener that is not theirs. The socket inodes of the process's descriptors
/// (/proc/PID/fd) against the listeners of its network namespace (/proc/PID/net/tcp, tcp6).
/// </summary>
internal static class ListenerOwnership
{
    private const string ListenState = "0A";

    public static bool Listens(int pid, int port)
    {
        var inodes = SocketInodes(pid);
        if (inodes.Count == 0)
        {
            return false;
        }

        foreach (var file in new[] { "tcp6", "tcp" })
        {
            string[] lines;
            try
            {
                lines = File.ReadAllLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/net/{file}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            if (ListeningInodes(lines, port).Any(inodes.Contains))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The inodes of the sockets in state LISTEN on <paramref name="port"/>, from /proc/net/tcp-format lines.</summary>
    internal static IEnumerable<ulong> ListeningInodes(IEnumerable<string> lines, int port)
    {
        foreach (var line in lines.Skip(1))
        {
            // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ..."
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 10 || fields[3] != ListenState)
            {
                continue;
            }

            var colon = fields[1].LastIndexOf(':');
            if (colon > 0 && int.TryParse(fields[1].AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var bound)
                && bound == port && ulong.TryParse(fields[9], NumberStyles.None, CultureInfo.InvariantCulture, out var inode))
            {
                yield return inode;
            }
        }
    }

    private static HashSet<ulong> SocketInodes(int pid)
    {
        var inodes = new HashSet<ulong>();
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/fd");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return inodes;
        }

        foreach (var entry in entries)
        {
            string? target;
            try
            {
                target = new FileInfo(entry).LinkTarget;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            // "socket:[12345]"
            if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) && target.EndsWith(']')
                && ulong.TryParse(target.AsSpan(8, target.Length - 9), NumberStyles.None, CultureInfo.InvariantCulture, out var inode))
            {
                inodes.Add(inode);
            }
        }

        return inodes;
    }
}
