using System.Globalization;
using Switchover.Interop;

namespace Switchover.State;

/// <summary>
/// Network namespaces as state keys. A Switchover namespace's table lives in one network namespace, so its state does
/// too: two network namespaces that run the same Switchover namespace (units with PrivateNetwork=, ip netns exec,
/// test labs) must neither share a lock nor signal each other. A network namespace is named by the inode of its nsfs
/// file (what /proc/PID/ns/net links to as net:[INODE]).
/// </summary>
public static class NetworkNamespaces
{
    /// <summary>The network namespace of this process (of its main thread: a thread may have entered another).</summary>
    public static ulong Current { get; } = Of("/proc/self/ns/net")
        ?? throw new InvalidOperationException("Cannot stat /proc/self/ns/net: Switchover needs Linux procfs.");

    /// <summary>The inode of a network namespace file (/proc/PID/ns/net, /run/netns/NAME), or null when it cannot be read.</summary>
    public static ulong? Of(string path) => Libc.FileIdentity(path)?.Inode;

    /// <summary>
    /// True while something still holds the network namespace: a process or thread in it, or a name under /run/netns.
    /// Processes this user may not inspect are not seen, so run as root for a complete answer (as status and
    /// cleanup do when they remove the state of a namespace found gone).
    /// </summary>
    public static bool Exists(ulong inode)
    {
        if (inode == Current)
        {
            return true;
        }

        foreach (var named in SafeFiles("/run/netns"))
        {
            if (Of(named) == inode)
            {
                return true;
            }
        }

        foreach (var process in SafeDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(process), NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                continue;
            }

            if (Of(Path.Combine(process, "ns/net")) == inode)
            {
                return true;
            }

            // Threads may sit in another network namespace than their process (setns on one thread).
            foreach (var task in SafeDirectories(Path.Combine(process, "task")))
            {
                if (Of(Path.Combine(task, "ns/net")) == inode)
                {
                    return true;
                }
            }
        }

        return false;
    }

    private static string[] SafeFiles(string directory)
    {
        try
        {
            return Directory.GetFiles(directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static string[] SafeDirectories(string directory)
    {
        try
        {
            return Directory.GetDirectories(directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}
