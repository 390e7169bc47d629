using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>
/// The generation deploy started, in one of two ways:
/// <list type="bullet">
/// <item>As deploy's child (the default): deploy sees its exit status.</item>
/// <item>Detached, under a service manager (NOTIFY_SOCKET set, e.g. <c>ExecReload=</c>): forked away from deploy
/// (<c>setsid -f</c>), so that its parent is the service manager when it sends MAINPID=. systemd 252 (Debian 12) keeps a
/// main pid that is not its own child as "alien": "Supervising process N which is not our child. We'll most likely
/// not notice when it exits." On <c>systemctl stop</c> it then does not wait for that process after SIGTERM and sends
/// SIGKILL at once (the unit ends <c>failed</c>, Result=signal, and the generation never drains): found in the VM lab.
/// Orphaned, the generation is adopted by systemd (PID 1, or the user manager, a subreaper), which then owns its exit
/// status; deploy watches it by pid and start time.</item>
/// </list>
/// Either way it stays in deploy's cgroup and inherits deploy's standard output and error (under systemd, the journal).
/// </summary>
internal abstract class LaunchedGeneration : IDisposable
{
    public abstract int Id { get; }

    /// <summary>The process, to signal it safely; null when it was gone before it could be read.</summary>
    public abstract ProcessIdentity? Identity { get; }

    public abstract bool HasExited { get; }

    /// <summary>Its exit status, once it exited, when deploy can know it (only for its own child).</summary>
    public abstract int? ExitCode { get; }

    public abstract Task WaitForExitAsync(CancellationToken cancellationToken);

    public virtual void Dispose()
    {
    }

    /// <exception cref="LaunchException">The command could not be started.</exception>
    public static LaunchedGeneration StartChild(IReadOnlyList<string> command, IReadOnlyDictionary<string, string> environment)
    {
        var process = Start(command[0], command.Skip(1), environment, command[0]);
        return new Child(process);
    }

    /// <summary>Starts the command forked away from deploy; its pid comes back through <paramref name="pidFile"/>.</summary>
    /// <exception cref="LaunchException">The command, or setsid, could not be started.</exception>
    public static async Task<LaunchedGeneration> StartDetachedAsync(
        IReadOnlyList<string> command, IReadOnlyDictionary<string, string> environment, string pidFile, CancellationToken cancellationToken)
    {
        // Checked here: once forked, a missing program is only a line on standard error and an exit nobody sees.
        if (Resolve(command[0]) is null)
        {
            throw new LaunchException($"'{command[0]}' could not be started (no such executable file). Check the command after '--'.");
        }

        File.Delete(pidFile);
        // The shell writes its own pid, then execs the generation in its place: the pid is the generation's.
        using var launcher = Start("setsid", ["-f", "/bin/sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", pidFile, .. command], environment, command[0]);
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(TimeSpan.FromSeconds(30));
        try
        {
            await launcher.WaitForExitAsync(bound.Token).ConfigureAwait(false);
            if (launcher.ExitCode != 0)
            {
                throw new LaunchException($"setsid -f exited with code {launcher.ExitCode} (its standard error says why); nothing was started.");
            }

            while (true)
            {
                if (ReadPid(pidFile) is { } pid)
                {
                    return new Detached(pid, ProcessIdentity.Read(pid));
                }

                await Task.Delay(TimeSpan.FromMilliseconds(20), bound.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new LaunchException("The detached generation did not report its pid within 30 s (setsid -f, /bin/sh); it may be running: check the namespace with switchover status.");
        }
        finally
        {
            File.Delete(pidFile);
        }
    }

    private static Process Start(string program, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment, string what)
    {
        var start = new ProcessStartInfo(program)
        {
            UseShellExecute = false,

            // Standard output and error are inherited, not piped: the generation outlives deploy, and its logs go
            // where deploy's go (under systemd, the journal). Standard input gets a pipe that is closed at once, so a
            // generation started from a terminal never touches it (a background process that does is stopped by SIGTTOU).
            RedirectStandardInput = true,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        try
        {
            var process = Process.Start(start) ?? throw new Win32Exception("Process.Start returned no process");
            process.StandardInput.Close();
            return process;
        }
        catch (Win32Exception e)
        {
            throw new LaunchException(program == what
                ? $"'{what}' could not be started ({Marshal.GetPInvokeErrorMessage(e.NativeErrorCode)}). Check the command after '--'."
                : $"'{program}' could not be started ({Marshal.GetPInvokeErrorMessage(e.NativeErrorCode)}); deploy needs it to launch '{what}' " +
                  "detached under a service manager. Install util-linux.");
        }
    }

    /// <summary>The executable file a command name runs, as execvp(3) finds it; null when there is none.</summary>
    internal static string? Resolve(string program)
    {
        static bool Executable(string path) =>
            !OperatingSystem.IsWindows() && File.Exists(path) && (File.GetUnixFileMode(path) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0;

        if (program.Contains('/', StringComparison.Ordinal))
        {
            return Executable(program) ? program : null;
        }

        var path = Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin";
        return path.Split(':', StringSplitOptions.RemoveEmptyEntries).Select(d => Path.Combine(d, program)).FirstOrDefault(Executable);
    }

    private static int? ReadPid(string pidFile)
    {
        try
        {
            var text = File.ReadAllText(pidFile);
            // Written by echo in one write; a line without its newline is not complete yet.
            return text.EndsWith('\n') && int.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : null;
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }

    private sealed class Child(Process process) : LaunchedGeneration
    {
        public override int Id => process.Id;

        public override ProcessIdentity? Identity { get; } = ProcessIdentity.Read(process.Id);

        public override bool HasExited => process.HasExited;

        public override int? ExitCode => process.HasExited ? process.ExitCode : null;

        public override Task WaitForExitAsync(CancellationToken cancellationToken) => process.WaitForExitAsync(cancellationToken);

        public override void Dispose()
        {
            process.Dispose();
            base.Dispose();
        }
    }

    /// <summary>Not deploy's child: its exit is learnt through a pidfd (<see cref="ProcessExitWatch"/>), its status is the manager's.</summary>
    private sealed class Detached : LaunchedGeneration
    {
        private readonly ProcessExitWatch? _exit;

        public Detached(int pid, ProcessIdentity? identity)
        {
            Id = pid;
            Identity = identity;
            _exit = identity is null ? null : ProcessExitWatch.Start(identity);
        }

        public override int Id { get; }

        public override ProcessIdentity? Identity { get; }

        public override bool HasExited => _exit is not { Exited.IsCompleted: false };

        public override int? ExitCode => null;

        public override Task WaitForExitAsync(CancellationToken cancellationToken) =>
            _exit?.Exited.WaitAsync(cancellationToken) ?? Task.CompletedTask;

        public override void Dispose()
        {
            _exit?.Dispose();
            base.Dispose();
        }
    }
}

/// <summary>The generation could not be started; nothing runs.</summary>
internal sealed class LaunchException(string message) : Exception(message);
