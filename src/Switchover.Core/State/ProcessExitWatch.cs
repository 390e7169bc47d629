using Switchover.Interop;

namespace Switchover.State;

/// <summary>
/// Learns within milliseconds that a process exited: a pidfd (which pins the pid, so a reused pid is never mistaken
/// for it) polled on a thread of its own. Where the kernel has no pidfd, the process is checked every
/// <see cref="FallbackInterval"/> instead.
/// </summary>
public sealed class ProcessExitWatch : IDisposable
{
    /// <summary>How often a process is checked where there is no pidfd, and how often the watch checks that it was disposed.</summary>
    public static readonly TimeSpan FallbackInterval = TimeSpan.FromMilliseconds(50);

    private readonly SafePidfdHandle? _pidfd;
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _disposed;

    private ProcessExitWatch(ProcessIdentity process, SafePidfdHandle? pidfd)
    {
        Process = process;
        _pidfd = pidfd;
        var thread = new Thread(Watch) { IsBackground = true, Name = $"switchover watch pid {process.Pid}" };
        thread.Start();
    }

    public ProcessIdentity Process { get; }

    /// <summary>Completes when the process has exited (or turned out not to be the one named, or was gone already).</summary>
    public Task Exited => _exited.Task;

    /// <summary>Starts watching <paramref name="process"/>. Its <see cref="Exited"/> is complete at once when it is gone already.</summary>
    public static ProcessExitWatch Start(ProcessIdentity process)
    {
        var pidfd = Libc.TryPidfdOpen(process.Pid, out _);
        return new ProcessExitWatch(process, pidfd);
    }

    private void Watch()
    {
        try
        {
            // The pidfd pins the pid from here on: checking the start time once now is enough.
            if (!Process.IsAlive())
            {
                return;
            }

            var interval = (int)FallbackInterval.TotalMilliseconds;
            while (!_disposed)
            {
                if (_pidfd is not null ? Libc.PollReadable(_pidfd, interval) : WaitAndCheckGone(interval))
                {
                    return;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // Disposed while polling: nobody waits any more.
        }
        finally
        {
            // A watch disposed while its process lives never reports an exit.
            if (!_disposed)
            {
                _exited.TrySetResult();
            }
        }
    }

    private bool WaitAndCheckGone(int interval)
    {
        Thread.Sleep(interval);
        return !Process.IsAlive();
    }

    public void Dispose()
    {
        _disposed = true;
        _pidfd?.Dispose();
    }
}
