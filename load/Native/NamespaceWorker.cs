using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Switchover.Load.Native;

/// <summary>
/// A thread of this process inside a lab's network namespace (setns), running the work it is given one item at a
/// time: what it opens (a libnftables context, a netlink socket) and what it forks (nft, conntrack) belongs to that
/// namespace, as it would in a generation running there. Nothing else ever runs on it.
/// </summary>
internal sealed partial class NamespaceWorker : IDisposable
{
    private const int CloneNewNet = 0x40000000;
    private readonly BlockingCollection<Action> _work = [];
    private readonly Thread _thread;

    private NamespaceWorker(string name)
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "bench netns " + name };
    }

    public static NamespaceWorker Start(string namespaceName)
    {
        var worker = new NamespaceWorker(namespaceName);
        var joined = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        worker._thread.Start((namespaceName, joined));
        joined.Task.GetAwaiter().GetResult();
        return worker;
    }

    /// <summary>Runs <paramref name="work"/> on the namespace's thread and waits for it.</summary>
    public T Run<T>(Func<T> work)
    {
        T result = default!;
        ExceptionDispatchInfo? error = null;
        using var done = new ManualResetEventSlim();
        _work.Add(() =>
        {
            try
            {
                result = work();
            }
#pragma warning disable CA1031 // Rethrown on the caller's thread.
            catch (Exception e)
#pragma warning restore CA1031
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
            finally
            {
                done.Set();
            }
        });
        done.Wait();
        error?.Throw();
        return result;
    }

    public void Dispose()
    {
        _work.CompleteAdding();
        _thread.Join(TimeSpan.FromSeconds(10));
        _work.Dispose();
    }

    private void Run(object? state)
    {
        var (name, joined) = ((string, TaskCompletionSource))state!;
        try
        {
            using var handle = File.OpenHandle("/var/run/netns/" + name, FileMode.Open, FileAccess.Read);
            if (SetNs(handle, CloneNewNet) != 0)
            {
                throw new InvalidOperationException($"setns({name}) failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            joined.SetException(e);
            return;
        }

        joined.SetResult();
        foreach (var work in _work.GetConsumingEnumerable())
        {
            work();
        }
    }

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(SafeFileHandle fd, int nsType);
}

/// <summary>CPU time: of the calling thread (user + system, so a syscall's kernel work counts), and of reaped children.</summary>
internal static partial class CpuClock
{
    private const int ClockThreadCputimeId = 3;
    private const int RusageChildren = -1;

    public static unsafe TimeSpan Thread()
    {
        var ts = stackalloc long[2];
        _ = ClockGettime(ClockThreadCputimeId, ts);
        return TimeSpan.FromTicks((ts[0] * TimeSpan.TicksPerSecond) + (ts[1] / 100));
    }

    /// <summary>User + system time of every child this process has waited for (a program run to completion).</summary>
    public static unsafe TimeSpan Children()
    {
        var usage = stackalloc long[18]; // struct rusage: two timevals first, then 14 longs
        _ = GetRusage(RusageChildren, usage);
        var micros = (usage[0] * 1_000_000) + usage[1] + (usage[2] * 1_000_000) + usage[3];
        return TimeSpan.FromTicks(micros * 10);
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static unsafe partial int ClockGettime(int clock, long* ts);

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static unsafe partial int GetRusage(int who, long* usage);
}
