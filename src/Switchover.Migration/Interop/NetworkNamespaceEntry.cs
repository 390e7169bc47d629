using System.Runtime.InteropServices;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Interop;

/// <summary>
/// Runs code on a short-lived thread that has joined an `ip netns` namespace. Descriptors a TUN device or socket opens
/// there stay bound to that namespace for life, so the packet loops can use them from any thread afterwards.
/// </summary>
internal static class NetworkNamespaceEntry
{
    public static Task<T> RunAsync<T>(string namespaceName, Func<T> action)
    {
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                Enter(namespaceName);
                completion.SetResult(action());
            }
#pragma warning disable CA1031 // Whatever the action throws belongs to the caller, on its own thread.
            catch (Exception e)
#pragma warning restore CA1031
            {
                completion.SetException(e);
            }

            // The thread ends here, and its namespace membership with it: no other code ever runs on it.
        })
        {
            IsBackground = true,
            Name = "netns " + namespaceName,
        };
        thread.Start();
        return completion.Task;
    }

    private static void Enter(string namespaceName)
    {
        var path = "/run/netns/" + namespaceName;
        var fd = Libc.Open(path, Libc.O_CLOEXEC);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new TunnelException($"Could not open network namespace {path}: {Libc.Describe(errno)}. " +
                (errno == Libc.ENOENT ? $"Create it first (ip netns add {namespaceName})." : "Run as root."), errno);
        }

        using var handle = new FileDescriptor(fd);
        if (Libc.SetNs(fd, Libc.CLONE_NEWNET) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new TunnelException($"setns({path}, CLONE_NEWNET) failed: {Libc.Describe(errno)}. Run as root or grant CAP_SYS_ADMIN.", errno);
        }
    }
}
