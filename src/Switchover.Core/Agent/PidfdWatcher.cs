using System.Threading.Channels;
using Switchover.Interop;
using Switchover.State;

namespace Switchover.Agent;

/// <summary>A watched generation whose process exited.</summary>
internal sealed record GenerationExit(NamespaceName Namespace, GenerationRecord Generation);

/// <summary>
/// Holds a pidfd for every watched generation and reports each one's exit the moment the kernel does: a pidfd
/// becomes readable when its process exits (pidfd_open(2)), so one thread polls them all, with an eventfd to wake it
/// when the set changes. No pid is ever re-read, so a reused pid cannot hide a death.
/// </summary>
internal sealed class PidfdWatcher : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Namespace, long Id), (SafePidfdHandle Pidfd, GenerationExit Exit)> _watched = [];
    private readonly Channel<GenerationExit> _exits = Channel.CreateUnbounded<GenerationExit>();
    private readonly int _wake;
    private readonly Thread _thread;
    private volatile bool _stopping;

    public PidfdWatcher()
    {
        _wake = Libc.EventFd(0, 0x800 /* EFD_NONBLOCK */ | 0x80000 /* EFD_CLOEXEC */);
        if (_wake < 0)
        {
            throw new IOException("eventfd failed; the agent cannot watch generations.");
        }

        _thread = new Thread(Run) { IsBackground = true, Name = "switchover pidfd watcher" };
        _thread.Start();
    }

    /// <summary>Exits of watched generations, in the order the kernel reported them.</summary>
    public ChannelReader<GenerationExit> Exits => _exits.Reader;

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _watched.Count;
            }
        }
    }

    /// <summary>True when a pidfd on the process is readable: it has exited.</summary>
    public static bool HasExited(SafePidfdHandle pidfd)
    {
        Span<Libc.PollDescriptor> fds = [new() { Fd = (int)pidfd.DangerousGetHandle(), Events = Libc.POLLIN }];
        return Libc.Poll(fds, 0) > 0;
    }

    public bool IsWatched(NamespaceName name, long id)
    {
        lock (_lock)
        {
            return _watched.ContainsKey((name.Value, id));
        }
    }

    /// <summary>
    /// Watches a generation's process. Returns <see cref="WatchResult.Dead"/> when the process (this pid with this start
    /// time) is not running, without watching it; the caller repairs at once then.
    /// </summary>
    public WatchResult Watch(NamespaceName name, GenerationRecord generation)
    {
        lock (_lock)
        {
            if (_watched.TryGetValue((name.Value, generation.Id), out var existing))
            {
                // Keep the pidfd; the record (its state) is what changes between operations.
                _watched[(name.Value, generation.Id)] = (existing.Pidfd, new GenerationExit(name, generation));
                return WatchResult.AlreadyWatched;
            }
        }

        var pidfd = Libc.TryPidfdOpen(generation.Pid, out var errno);
        if (pidfd is null)
        {
            return errno == Libc.ESRCH ? WatchResult.Dead
                : throw new IOException($"pidfd_open({generation.Pid}) failed with errno {errno}: the agent needs Linux 5.3 or later.");
        }

        // The pidfd pins the pid from here on; the start time read now is the process's it names, unless it exited.
        if (!generation.Process.IsAlive() || HasExited(pidfd))
        {
            pidfd.Dispose();
            return WatchResult.Dead;
        }

        lock (_lock)
        {
            _watched[(name.Value, generation.Id)] = (pidfd, new GenerationExit(name, generation));
        }

        Libc.EventFdSignal(_wake);
        return WatchResult.Watching;
    }

    /// <summary>Reports a generation found dead without a pidfd (at start, or by a rescan), as if its pidfd had said so.</summary>
    public void ReportDead(GenerationExit exit) => _exits.Writer.TryWrite(exit);

    /// <summary>Stops watching (the generation left).</summary>
    public void Forget(NamespaceName name, long id)
    {
        lock (_lock)
        {
            if (_watched.Remove((name.Value, id), out var entry))
            {
                entry.Pidfd.Dispose();
            }
        }

        Libc.EventFdSignal(_wake);
    }

    public void Dispose()
    {
        _stopping = true;
        Libc.EventFdSignal(_wake);
        _thread.Join(TimeSpan.FromSeconds(5));
        lock (_lock)
        {
            foreach (var entry in _watched.Values)
            {
                entry.Pidfd.Dispose();
            }

            _watched.Clear();
        }

        _ = Libc.Close(_wake);
        _exits.Writer.TryComplete();
    }

    private void Run()
    {
        while (!_stopping)
        {
            (string, long)[] keys;
            Libc.PollDescriptor[] fds;
            lock (_lock)
            {
                keys = [.. _watched.Keys];
                fds = new Libc.PollDescriptor[keys.Length + 1];
                fds[0] = new Libc.PollDescriptor { Fd = _wake, Events = Libc.POLLIN };
                for (var i = 0; i < keys.Length; i++)
                {
                    fds[i + 1] = new Libc.PollDescriptor { Fd = (int)_watched[keys[i]].Pidfd.DangerousGetHandle(), Events = Libc.POLLIN };
                }
            }

            // The timeout only bounds how long a closed pidfd could sit in the set; wakes come through the eventfd.
            var ready = Libc.Poll(fds, 1000);
            if (ready <= 0)
            {
                continue;
            }

            if (fds[0].ReturnedEvents != 0)
            {
                Libc.EventFdDrain(_wake);
            }

            for (var i = 0; i < keys.Length; i++)
            {
                if (fds[i + 1].ReturnedEvents == 0)
                {
                    continue;
                }

                GenerationExit? exit = null;
                lock (_lock)
                {
                    // Forgotten meanwhile (and maybe its descriptor number reused): only a pidfd still watched counts.
                    if (_watched.TryGetValue(keys[i], out var entry) && (int)entry.Pidfd.DangerousGetHandle() == fds[i + 1].Fd
                        && HasExited(entry.Pidfd))
                    {
                        _watched.Remove(keys[i]);
                        entry.Pidfd.Dispose();
                        exit = entry.Exit;
                    }
                }

                if (exit is not null)
                {
                    _exits.Writer.TryWrite(exit);
                }
            }
        }
    }
}

internal enum WatchResult
{
    Watching,
    AlreadyWatched,
    Dead,
}
