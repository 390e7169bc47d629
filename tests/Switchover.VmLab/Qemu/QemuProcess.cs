using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Switchover.VmLab.Qemu;

/// <summary>
/// One qemu-system-x86_64 in a process group of its own, under a small shell watchdog that holds a pipe from this
/// process: <see cref="KillAsync"/> kills the whole group with SIGKILL (qemu with a hung KVM guest ignores SIGTERM),
/// and if this process dies without disposing, even by a crash, the pipe closes and the watchdog kills qemu. Every VM
/// still running when the process exits normally is killed by a ProcessExit handler as well.
/// </summary>
internal sealed class QemuProcess : IAsyncDisposable
{
    public const string Program = "qemu-system-x86_64";

    // Runs as `sh -c <this> vmlab-watchdog qemu-system-x86_64 <arguments>`. Asynchronous lists get /dev/null as
    // standard input in a non-interactive shell, so the reader gets the pipe as fd 3.
    private const string Watchdog = """
        exec 3<&0
        "$@" </dev/null 3<&- &
        qemu=$!
        { read -r _ <&3; kill -KILL "$qemu"; } 2>/dev/null &
        reader=$!
        wait "$qemu"
        code=$?
        kill -KILL "$reader" 2>/dev/null
        exit "$code"
        """;

    private static readonly ConcurrentDictionary<QemuProcess, byte> Running = new();

    private readonly Process _watchdog;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string? _pidFile;
    private int _killed;

    static QemuProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var qemu in Running.Keys)
            {
                qemu.KillGroup();
            }
        };
    }

    private QemuProcess(Process watchdog, string commandLine, string? pidFile)
    {
        _watchdog = watchdog;
        CommandLine = commandLine;
        _pidFile = pidFile;
        ProcessGroup = watchdog.Id;
    }

    public string CommandLine { get; }

    /// <summary>The process group of the watchdog and qemu (the watchdog's pid).</summary>
    public int ProcessGroup { get; }

    /// <summary>Completes with qemu's exit code when it exits (guest poweroff, panic with -no-reboot, error or kill).</summary>
    public Task<int> Exited => _exited.Task;

    /// <summary>What qemu printed on stdout and stderr (its own errors and warnings; the guest console is a file).</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>qemu's own pid from its -pidfile, once it has written it; null before.</summary>
    public int? QemuPid
    {
        get
        {
            try
            {
                return _pidFile is not null && File.Exists(_pidFile)
                    && int.TryParse(File.ReadAllText(_pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                    ? pid
                    : null;
            }
            catch (IOException)
            {
                return null;
            }
        }
    }

    public static QemuProcess Start(IReadOnlyList<string> arguments, string? pidFile)
    {
        // setsid(1) calls setsid() and execs in place (the child of .NET is not a group leader), so the watchdog's
        // pid is the group's id and one kill(-pgid) reaches qemu too.
        var startInfo = new ProcessStartInfo("setsid")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "sh", "-c", Watchdog, "vmlab-watchdog", Program }.Concat(arguments))
        {
            startInfo.ArgumentList.Add(argument);
        }

        var commandLine = HostCommand.Render(Program, arguments);
        var process = new Process { StartInfo = startInfo, EnableRaisingEvents = true };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new VmLabException($"Cannot start the VM: `setsid` failed to run ({e.Message}); util-linux is missing.", e);
        }

        var qemu = new QemuProcess(process, commandLine, pidFile);
        Running.TryAdd(qemu, 0);
        process.OutputDataReceived += (_, e) => qemu.Append(e.Data);
        process.ErrorDataReceived += (_, e) => qemu.Append(e.Data);
        process.Exited += (_, _) => qemu._exited.TrySetResult(SafeExitCode(process));
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (process.HasExited)
        {
            qemu._exited.TrySetResult(SafeExitCode(process));
        }

        return qemu;
    }

    /// <summary>Kills qemu and its watchdog and waits (bounded) until both are gone; never throws.</summary>
    public async Task KillAsync()
    {
        if (Interlocked.Exchange(ref _killed, 1) == 0)
        {
            // Closing the pipe first lets the watchdog kill and reap qemu itself, so that no zombie is left for an
            // init that may not reap; the group kill then takes whatever is still there.
            try
            {
                _watchdog.StandardInput.Close();
            }
            catch (IOException)
            {
                // The watchdog is gone already.
            }

            try
            {
                await _exited.Task.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Killed below.
            }

            KillGroup();
        }

        var gone = await WaitGoneAsync(TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        Running.TryRemove(this, out _);
        if (!gone)
        {
            var message = $"vmlab: qemu (group {ProcessGroup}, pid {QemuPid}) is still there 15 s after SIGKILL: {CommandLine}";
            Trace.TraceWarning(message);
            await Console.Error.WriteLineAsync(message).ConfigureAwait(false);
        }
    }

    /// <summary>True once qemu's pid no longer exists (kill(pid, 0) gives ESRCH).</summary>
    public bool IsQemuGone()
    {
        var pid = QemuPid;
        if (pid is null)
        {
            return _exited.Task.IsCompleted;
        }

        return Interop.Libc.Kill(pid.Value, 0) != 0 && Marshal.GetLastPInvokeError() == Interop.Libc.ESRCH;
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync().ConfigureAwait(false);
        if (_exited.Task.IsCompleted)
        {
            _watchdog.Dispose();
        }
    }

    private async Task<bool> WaitGoneAsync(TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        try
        {
            await _exited.Task.WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return false;
        }

        // The watchdog reaps qemu before it exits itself, so qemu is normally gone already; a zombie counts as there.
        while (!IsQemuGone() && deadline.Elapsed < timeout)
        {
            await Task.Delay(50).ConfigureAwait(false);
        }

        return IsQemuGone();
    }

    private void KillGroup()
    {
        // Once the watchdog is reaped and qemu gone, the group id is free and may name someone else's group.
        if (_exited.Task.IsCompleted && IsQemuGone())
        {
            return;
        }

        if (Interop.Libc.Kill(-ProcessGroup, Interop.Libc.SigKill) != 0 && Marshal.GetLastPInvokeError() != Interop.Libc.ESRCH)
        {
            Trace.TraceWarning($"vmlab: kill(-{ProcessGroup}, SIGKILL) failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            if (_output.Length < 64 * 1024)
            {
                _output.AppendLine(line);
            }
        }
    }

    private static int SafeExitCode(Process process)
    {
        try
        {
            return process.ExitCode;
        }
        catch (InvalidOperationException)
        {
            return -1;
        }
    }
}
