using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Switchover.Processes;

namespace Switchover.Lab;

/// <summary>
/// A named Linux network namespace (<c>ip netns</c>) owned by one test. Sockets and processes can be created inside it;
/// disposing it kills everything that still runs in it and deletes it. Requires root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
/// </summary>
public sealed partial class NetworkNamespace : IAsyncDisposable
{
    // Cleanup gets its own budget so it still runs when the caller's token has fired.
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(30);
    private static readonly ConcurrentDictionary<string, NetworkNamespace> Undisposed = new(StringComparer.Ordinal);

    private readonly NamespaceThread _thread;
    private readonly Lock _processesLock = new();
    private readonly List<LabProcess> _processes = [];
    private int _disposed;

    static NetworkNamespace()
    {
        // Safety net for a run that ends without disposing (a test host torn down after a timeout, a crash): a namespace
        // outlives the process that created it, so delete ours on the way out.
        AppDomain.CurrentDomain.ProcessExit += (_, _) => DisposeUndisposed();
        AppDomain.CurrentDomain.UnhandledException += (_, _) => DisposeUndisposed();
    }

    private NetworkNamespace(string name, NamespaceThread thread)
    {
        Name = name;
        _thread = thread;
    }

    /// <summary>The namespace name, as <c>ip netns</c> knows it: the prefix, a dash and six random hex digits.</summary>
    public string Name { get; }

    /// <summary>Runs <paramref name="action"/> on a thread of its own inside the namespace, which then ends; its result or its exception.</summary>
    public T RunOnThreadInside<T>(Func<T> action) => NamespaceThread.RunOnce("/var/run/netns/" + Name, action);

    /// <summary>The inode of the network namespace (what /proc/PID/ns/net of a process in it links to as net:[INODE]).</summary>
    public ulong Inode => Switchover.State.NetworkNamespaces.Of("/var/run/netns/" + Name)
        ?? throw new InvalidOperationException($"/var/run/netns/{Name} is gone: the network namespace was deleted.");

    /// <summary>
    /// Creates a namespace named <c>{prefix}-{6 random hex digits}</c> with its loopback interface up.
    /// </summary>
    /// <param name="prefix">1 to 8 characters of [a-z0-9-], starting with a letter or digit, e.g. "so-s".</param>
    public static async Task<NetworkNamespace> CreateAsync(string prefix, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (!PrefixPattern().IsMatch(prefix))
        {
            throw new ArgumentException(
                $"Namespace prefix '{prefix}' is invalid: use 1 to 8 characters of [a-z0-9-] starting with a letter or digit, e.g. \"so-s\".",
                nameof(prefix));
        }

        var name = prefix + "-" + RandomNumberGenerator.GetHexString(6, lowercase: true);
        try
        {
            await Ip(cancellationToken, "netns", "add", name).ConfigureAwait(false);
        }
        catch (CommandException e) when (e.StandardError.Contains("ermission denied", StringComparison.Ordinal)
                                          || e.StandardError.Contains("not permitted", StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"Could not create network namespace '{name}': {e.StandardError}. Run as root (or with CAP_SYS_ADMIN and CAP_NET_ADMIN).", e);
        }

        NamespaceThread? thread = null;
        try
        {
            await Ip(cancellationToken, "-n", name, "link", "set", "lo", "up").ConfigureAwait(false);
            thread = NamespaceThread.Start(name, "/var/run/netns/" + name);
        }
        catch
        {
            using var cleanup = new CancellationTokenSource(CleanupTimeout);
            await CommandRunner.Instance.TryRunAsync(Command.Create("ip", "netns", "del", name), cleanup.Token).ConfigureAwait(false);
            throw;
        }

        var ns = new NetworkNamespace(name, thread);
        Undisposed[name] = ns;
        return ns;
    }

    /// <summary>
    /// Creates a socket that lives in this namespace: it binds, listens and connects there, whichever thread uses it.
    /// </summary>
    public Socket CreateSocket(AddressFamily addressFamily, SocketType socketType, ProtocolType protocolType)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return _thread.CreateSocket(addressFamily, socketType, protocolType);
    }

    // The load driver's path: no thread-pool thread blocks while the namespace thread works.
    internal Task<Socket> CreateSocketAsync(AddressFamily addressFamily, SocketType socketType, ProtocolType protocolType)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return _thread.CreateSocketAsync(addressFamily, socketType, protocolType);
    }

    /// <summary>Runs a program inside the namespace to completion. Throws <see cref="CommandException"/> on a non-zero exit code.</summary>
    public async Task<CommandOutput> RunAsync(string fileName, IEnumerable<string> arguments, CancellationToken cancellationToken)
    {
        var result = await CommandRunner.Instance.RunAsync(ExecCommand(fileName, arguments), cancellationToken).ConfigureAwait(false);
        return new CommandOutput(result.ExitCode, result.StandardOutput, result.StandardError, result.Duration);
    }

    /// <summary>
    /// Runs a program inside the namespace to completion and returns its result whatever the exit code. It is killed
    /// after <paramref name="timeout"/> (default 30 s).
    /// </summary>
    public async Task<CommandOutput> TryRunAsync(string fileName, IEnumerable<string> arguments, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        var command = ExecCommand(fileName, arguments);
        var result = await CommandRunner.Instance.TryRunAsync(timeout is { } limit ? command with { Timeout = limit } : command, cancellationToken)
            .ConfigureAwait(false);
        return new CommandOutput(result.ExitCode, result.StandardOutput, result.StandardError, result.Duration);
    }

    /// <summary>
    /// Starts a long-running program inside the namespace. <c>ip netns exec</c> execs the program, so
    /// <see cref="LabProcess.Pid"/> is the program's own pid. The process is killed when this namespace is disposed.
    /// </summary>
    public LabProcess StartProcess(string fileName, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var command = ExecCommand(fileName, arguments) with { Environment = environment };
        var process = LabProcess.Start(command);
        lock (_processesLock)
        {
            _processes.Add(process);
        }

        return process;
    }

    /// <summary>
    /// Kills every process still in the namespace and deletes it. Never throws: a failed cleanup step is reported on
    /// standard error, so that it cannot hide the failure of the test that is unwinding.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        using var timeout = new CancellationTokenSource(CleanupTimeout);
        var errors = new List<string>();
        LabProcess[] processes;
        lock (_processesLock)
        {
            processes = [.. _processes];
        }

        foreach (var process in processes)
        {
            process.Kill();
        }

        await KillRemainingProcessesAsync(errors, timeout.Token).ConfigureAwait(false);
        foreach (var process in processes)
        {
            await process.DisposeAsync().ConfigureAwait(false);
        }

        try
        {
            _thread.Dispose();
        }
        catch (InvalidOperationException e)
        {
            errors.Add(e.Message);
        }

        // `ip netns del` can fail with EBUSY while a process that is still exiting holds a copy of the namespace's
        // mount (ip netns exec gives each command a mount namespace of its own); try again for a few seconds.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await Ip(timeout.Token, "netns", "del", Name).ConfigureAwait(false);
                break;
            }
            catch (CommandException e) when (attempt < 10 && !timeout.IsCancellationRequested)
            {
                await Console.Error.WriteLineAsync($"ip netns del {Name} failed (attempt {attempt}), retrying: {e.Message}").ConfigureAwait(false);
                await Task.Delay(TimeSpan.FromMilliseconds(300), CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception e) when (e is CommandException or OperationCanceledException)
            {
                errors.Add(e.Message);
                break;
            }
        }

        Undisposed.TryRemove(Name, out _);
        if (errors.Count > 0)
        {
            var message = $"Cleanup of network namespace '{Name}' was incomplete: {string.Join("; ", errors)}. "
                          + $"Check `ip netns list` and `ip netns pids {Name}`.";
            Trace.TraceWarning(message);
            await Console.Error.WriteLineAsync(message).ConfigureAwait(false);
        }
    }

    public override string ToString() => Name;

    private static void DisposeUndisposed()
    {
        foreach (var ns in Undisposed.Values)
        {
            ns.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(10));
        }
    }

    internal static Task<CommandResult> Ip(CancellationToken cancellationToken, params string[] arguments) =>
        CommandRunner.Instance.RunAsync(Command.Create("ip", arguments), cancellationToken);

    internal static int[] ParsePids(string output)
    {
        var pids = new List<int>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                pids.Add(pid);
            }
        }

        return [.. pids];
    }

    private Command ExecCommand(string fileName, IEnumerable<string> arguments)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        ArgumentNullException.ThrowIfNull(arguments);
        return new Command("ip", ["netns", "exec", Name, fileName, .. arguments]);
    }

    private async Task KillRemainingProcessesAsync(List<string> errors, CancellationToken cancellationToken)
    {
        // Processes may fork while we kill, so repeat until `ip netns pids` comes back empty.
        var self = Environment.ProcessId;
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            CommandResult result;
            try
            {
                result = await CommandRunner.Instance.RunAsync(Command.Create("ip", "netns", "pids", Name), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is CommandException or OperationCanceledException)
            {
                errors.Add(e.Message);
                return;
            }

            // Our own namespace thread is not a process leader, so `ip netns pids` does not list this process; guard anyway.
            var pids = ParsePids(result.StandardOutput).Where(pid => pid != self).ToArray();
            if (pids.Length == 0)
            {
                return;
            }

            if (deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                errors.Add($"processes {string.Join(", ", pids)} were still running 10 s after SIGKILL");
                return;
            }

            foreach (var pid in pids)
            {
                _ = Interop.Libc.Kill(pid, Signals.Kill);
            }

            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException e)
            {
                errors.Add(e.Message);
                return;
            }
        }
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,7}$", RegexOptions.CultureInvariant)]
    private static partial Regex PrefixPattern();
}
