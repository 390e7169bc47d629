using System.ComponentModel;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Switchover.Processes;

namespace Switchover.Lab;

/// <summary>
/// A long-running process started by <see cref="NetworkNamespace.StartProcess"/>. Its standard output and standard error
/// are captured line by line. Disposing it kills it (SIGKILL) if it still runs and waits for it to exit.
/// </summary>
public sealed class LabProcess : IAsyncDisposable
{
    // Keeps a chatty process from growing without bound over a long demo; the newest lines are the ones kept.
    private const int MaxLines = 20_000;

    private readonly Process _process;
    private readonly Lock _lock = new();
    private readonly List<string> _lines = [];
    private readonly List<(string Text, TaskCompletionSource<string> Seen)> _waiters = [];
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int? _exitCode; // set under _lock, so a waiter is either failed by the exit or sees it
    private int _disposed;

    private LabProcess(Process process, string commandLine)
    {
        _process = process;
        CommandLine = commandLine;
        Pid = process.Id;
    }

    /// <summary>The kernel process id of the program.</summary>
    public int Pid { get; }

    /// <summary>The command as it would be typed in a shell (for reading, never for running).</summary>
    public string CommandLine { get; }

    /// <summary>Completes with the exit code when the process has exited (128 + signal number when a signal ended it).</summary>
    public Task<int> Exited => _exited.Task;

    public bool HasExited => _exited.Task.IsCompleted;

    /// <summary>Everything the process printed so far, standard output and standard error interleaved, one line per line.</summary>
    public string Output
    {
        get
        {
            lock (_lock)
            {
                return string.Join('\n', _lines);
            }
        }
    }

    /// <summary>A snapshot of the lines printed so far.</summary>
    public IReadOnlyList<string> OutputLines
    {
        get
        {
            lock (_lock)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>
    /// Waits until a line containing <paramref name="text"/> (ordinal) is printed, and returns that line. Lines printed
    /// before the call count. Throws <see cref="TimeoutException"/> after <paramref name="timeout"/>, and
    /// <see cref="InvalidOperationException"/> if the process exits first; both messages carry the output so far.
    /// </summary>
    public async Task<string> WaitForOutputAsync(string text, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        var waiter = (Text: text, Seen: new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (_lock)
        {
            foreach (var line in _lines)
            {
                if (line.Contains(text, StringComparison.Ordinal))
                {
                    return line;
                }
            }

            if (_exitCode is { } exitCode)
            {
                throw ExitedBeforeOutput(text, exitCode);
            }

            _waiters.Add(waiter);
        }

        try
        {
            return await waiter.Seen.Task.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException(
                $"'{text}' did not appear in the output of `{CommandLine}` (pid {Pid}) within {timeout.TotalSeconds:0.#} s. Output so far:\n{Output}", e);
        }
        finally
        {
            lock (_lock)
            {
                _waiters.Remove(waiter);
            }
        }
    }

    /// <summary>Sends a signal (see <see cref="Signals"/>). Throws <see cref="InvalidOperationException"/> if the process has exited.</summary>
    public void SendSignal(int signal)
    {
        if (!TrySendSignal(signal))
        {
            throw new InvalidOperationException($"`{CommandLine}` (pid {Pid}) has already exited; cannot send signal {signal}.");
        }
    }

    /// <summary>
    /// Waits until the kernel reports the process stopped (state T in /proc/PID/stat: a SIGSTOP, sent or raised by
    /// itself, took effect). Throws <see cref="TimeoutException"/> after <paramref name="timeout"/> or when it exits first.
    /// </summary>
    public async Task WaitUntilStoppedAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!HasExited && DateTime.UtcNow < deadline)
        {
            try
            {
                var stat = await File.ReadAllTextAsync($"/proc/{Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)}/stat", cancellationToken).ConfigureAwait(false);
                // pid (comm) STATE ...: the command may hold spaces and parentheses, the state follows the last ')'.
                if (stat[(stat.LastIndexOf(')') + 1)..].TrimStart().StartsWith('T'))
                {
                    return;
                }
            }
            catch (IOException)
            {
                // Gone between the check and the read: reported below.
            }

            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }

        throw new TimeoutException($"`{CommandLine}` (pid {Pid}) did not stop within {timeout.TotalSeconds:0.#} s{(HasExited ? " (it exited)" : string.Empty)}. Output so far:\n{Output}");
    }

    /// <summary>Sends SIGKILL. Does nothing if the process has already exited.</summary>
    public void Kill() => TrySendSignal(Signals.Kill);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Kill();
        try
        {
            await _exited.Task.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            var message = $"`{CommandLine}` (pid {Pid}) did not exit within 10 s of SIGKILL.";
            Trace.TraceWarning(message);
            await Console.Error.WriteLineAsync(message).ConfigureAwait(false);
            return; // Leave the Process object to the finalizer rather than block here.
        }

        _process.Dispose();
    }

    public override string ToString() => $"{CommandLine} (pid {Pid})";

    internal static LabProcess Start(Command command)
    {
        // Standard input is redirected and left open: the program must not read the test runner's terminal, nor see EOF and quit.
        var startInfo = command.ToStartInfo();
        var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (Win32Exception e)
        {
            process.Dispose();
            throw new CommandNotFoundException(command.ToString(), command.FileName, e);
        }

        var labProcess = new LabProcess(process, command.ToString());
        process.OutputDataReceived += (_, e) => labProcess.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => labProcess.OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _ = labProcess.MonitorExitAsync();
        return labProcess;
    }

    /// <summary>Sends a signal if the process still runs; false when it has exited.</summary>
    public bool TrySendSignal(int signal)
    {
        // Process.HasExited is true once the runtime has reaped the child; after that the pid may belong to someone else.
        if (HasExited || _process.HasExited)
        {
            return false;
        }

        if (Interop.Libc.Kill(Pid, signal) == 0)
        {
            return true;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno == Interop.Libc.ESRCH)
        {
            return false;
        }

        throw new InvalidOperationException(
            $"kill({Pid}, {signal}) failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).");
    }

    private async Task MonitorExitAsync()
    {
        var reaped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _process.Exited += (_, _) => reaped.TrySetResult();
        _process.EnableRaisingEvents = true;
        if (_process.HasExited)
        {
            reaped.TrySetResult();
        }

        await reaped.Task.ConfigureAwait(false);

        // WaitForExitAsync also waits for the end of the redirected output, so the last lines are in. A child that
        // inherited the pipes can hold them open, though: the exit is reported regardless after a moment.
        using (var outputEnd = new CancellationTokenSource(TimeSpan.FromSeconds(2)))
        {
            try
            {
                await _process.WaitForExitAsync(outputEnd.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Reported without the output that is still to come.
            }
        }

        var exitCode = _process.ExitCode;
        lock (_lock)
        {
            _exitCode = exitCode;
            foreach (var (text, seen) in _waiters)
            {
                seen.TrySetException(ExitedBeforeOutput(text, exitCode));
            }
        }

        _exited.TrySetResult(exitCode);
    }

    private InvalidOperationException ExitedBeforeOutput(string text, int exitCode) =>
        new($"`{CommandLine}` (pid {Pid}) exited with code {exitCode} before printing '{text}'. Output:\n{Output}");

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lock)
        {
            if (_lines.Count >= MaxLines)
            {
                _lines.RemoveRange(0, MaxLines / 2);
            }

            _lines.Add(line);
            foreach (var (text, seen) in _waiters)
            {
                if (line.Contains(text, StringComparison.Ordinal))
                {
                    seen.TrySetResult(line);
                }
            }
        }
    }
}
