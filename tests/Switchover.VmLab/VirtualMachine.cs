using System.Diagnostics;
using System.Globalization;
using System.Text;
using Switchover.VmLab.Agent;
using Switchover.VmLab.Boot;
using Switchover.VmLab.Qemu;

namespace Switchover.VmLab;

/// <summary>
/// A qemu VM running Debian's stock kernel on this machine's own root filesystem (9p, read-only, under a tmpfs
/// overlay): the same dotnet, nft and build outputs at the same paths, and nothing written inside reaches the host
/// except through <see cref="HostShareDirectory"/> (/mnt/vmlab in the guest). No network device: only loopback and
/// what the guest creates. Commands run as root through the agent on a virtio-serial port.
/// Disposing kills qemu (its whole process group) and removes the VM's temporary directory, whatever state it is in.
/// </summary>
public sealed class VirtualMachine : IAsyncDisposable
{
    /// <summary>Where the guest sees <see cref="HostShareDirectory"/>.</summary>
    public const string GuestShareDirectory = "/mnt/vmlab";

    private const string PayloadDirectory = ".agent";
    private const string WorkDirectoryPrefix = "switchover-vm-";

    private readonly QemuProcess _qemu;
    private readonly AgentChannel _channel;
    private readonly IReadOnlyDictionary<string, string> _environment;
    private readonly TimeSpan _commandTimeout;
    private long _nextId;
    private int _disposed;

    private VirtualMachine(VmInit init, BootImage boot, Accelerator accelerator, string workDirectory, QemuProcess qemu, AgentChannel channel, VmOptions options)
    {
        Init = init;
        Boot = boot;
        Accelerator = accelerator;
        WorkDirectory = workDirectory;
        _qemu = qemu;
        _channel = channel;
        _environment = options.EffectiveEnvironment();
        _commandTimeout = options.CommandTimeout;
    }

    public VmInit Init { get; }

    public BootImage Boot { get; }

    public Accelerator Accelerator { get; }

    /// <summary>The guest's kernel release, as its agent reported it.</summary>
    public string KernelRelease { get; private set; } = "";

    /// <summary>From starting qemu to the agent's first line.</summary>
    public TimeSpan BootTime { get; private set; }

    /// <summary>The VM's temporary directory on the host (console log, agent socket, share); removed on dispose.</summary>
    public string WorkDirectory { get; }

    /// <summary>Host side of the read-write share, seen as <see cref="GuestShareDirectory"/> in the guest.</summary>
    public string HostShareDirectory => Path.Combine(WorkDirectory, "share");

    public string ConsoleLogPath => Path.Combine(WorkDirectory, "console.log");

    /// <summary>The process group of qemu and its watchdog.</summary>
    public int ProcessGroup => _qemu.ProcessGroup;

    /// <summary>qemu's pid, once qemu has written its pid file.</summary>
    public int? QemuPid => _qemu.QemuPid;

    public string QemuCommandLine => _qemu.CommandLine;

    /// <summary>Builds (or reuses) the boot image, starts qemu and waits until the agent in the guest answers.</summary>
    public static async Task<VirtualMachine> StartAsync(VmOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new VmOptions();
        CheckPrerequisites();
        var kernel = GuestKernel.Find();
        var cacheDirectory = options.CacheDirectory ?? BootImage.DefaultCacheDirectory;
        var boot = await BootImage.GetOrBuildAsync(kernel, options.Modules, cacheDirectory, cancellationToken).ConfigureAwait(false);
        var accelerator = await AcceleratorChoice.ChooseAsync(options.Accelerator, boot, cacheDirectory, cancellationToken).ConfigureAwait(false);

        RemoveAbandonedWorkDirectories();
        var workDirectory = Directory.CreateTempSubdirectory(WorkDirectoryPrefix).FullName;
        Directory.CreateDirectory(Path.Combine(workDirectory, "share", PayloadDirectory));
        AgentChannel? channel = null;
        QemuProcess? qemu = null;
        VirtualMachine? vm = null;
        try
        {
            channel = AgentChannel.Listen(Path.Combine(workDirectory, "agent.sock"));
            var launch = new QemuLaunch
            {
                Accelerator = accelerator,
                Boot = boot,
                Init = options.Init == VmInit.Systemd ? "systemd" : "small",
                ConsoleLog = Path.Combine(workDirectory, "console.log"),
                MemoryMiB = options.MemoryMiB,
                Cpus = options.Cpus,
                AgentSocket = Path.Combine(workDirectory, "agent.sock"),
                ShareDirectory = Path.Combine(workDirectory, "share"),
                PidFile = Path.Combine(workDirectory, "qemu.pid"),
            };
            var started = Stopwatch.StartNew();
            qemu = QemuProcess.Start(launch.Arguments, launch.PidFile);
            vm = new VirtualMachine(options.Init, boot, accelerator, workDirectory, qemu, channel, options);
            options.OnQemuStarted?.Invoke(qemu.ProcessGroup, workDirectory);

            using var boottime = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            boottime.CancelAfter(options.BootTimeout);
            var connected = channel.AcceptAsync(boottime.Token);
            await Task.WhenAny(connected, qemu.Exited).ConfigureAwait(false);
            if (!connected.IsCompleted)
            {
                throw vm.BootFailure("qemu exited before it connected the agent's port", null);
            }

            await connected.ConfigureAwait(false);
            var ready = channel.Ready.WaitAsync(boottime.Token);
            await Task.WhenAny(ready, qemu.Exited).ConfigureAwait(false);
            if (!ready.IsCompleted)
            {
                throw vm.BootFailure("qemu exited during the boot", null);
            }

            vm.KernelRelease = await ready.ConfigureAwait(false);
            vm.BootTime = started.Elapsed;
            return vm;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && vm is not null)
        {
            var failure = vm.BootFailure($"the agent did not answer within {options.BootTimeout.TotalSeconds:0} s", null);
            await vm.DisposeAsync().ConfigureAwait(false);
            throw failure;
        }
        catch (VmLabException e) when (vm is not null && e.Message.StartsWith("The VM's agent channel", StringComparison.Ordinal))
        {
            var failure = vm.BootFailure("the agent's port closed during the boot", e);
            await vm.DisposeAsync().ConfigureAwait(false);
            throw failure;
        }
        catch
        {
            if (vm is not null)
            {
                await vm.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                if (qemu is not null)
                {
                    await qemu.DisposeAsync().ConfigureAwait(false);
                }

                if (channel is not null)
                {
                    await channel.DisposeAsync().ConfigureAwait(false);
                }

                RemoveDirectory(workDirectory);
            }

            throw;
        }
    }

    /// <summary>
    /// Runs a bash script in the VM as root, in /, with <see cref="VmOptions.Environment"/>, and returns its exit code
    /// and output. A script still running after <paramref name="timeout"/> (default <see cref="VmOptions.CommandTimeout"/>)
    /// is killed with its process group and reported with <see cref="VmCommandResult.TimedOut"/>. Several may run at once.
    /// Throws <see cref="VmLabException"/> if the VM does not answer at all (it died or hangs).
    /// </summary>
    public async Task<VmCommandResult> RunAsync(string script, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var limit = timeout ?? _commandTimeout;
        var seconds = Math.Max(1, (int)Math.Ceiling(limit.TotalSeconds));
        var id = Interlocked.Increment(ref _nextId);
        var payloads = Path.Combine(HostShareDirectory, PayloadDirectory);
        var scriptPath = Path.Combine(payloads, $"{id}.sh");
        await File.WriteAllTextAsync(scriptPath, Preamble() + script + "\n", new UTF8Encoding(false), cancellationToken).ConfigureAwait(false);

        // The guest kills the script at the limit; the host gives it time to say so (TERM, then KILL 5 s later).
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        wait.CancelAfter(TimeSpan.FromSeconds(seconds + 30));
        var started = Stopwatch.StartNew();
        try
        {
            var (exitCode, timedOut) = await _channel.RunAsync(id, seconds, wait.Token).ConfigureAwait(false);
            var output = await ReadAndDeleteAsync(Path.Combine(payloads, $"{id}.out")).ConfigureAwait(false);
            var error = await ReadAndDeleteAsync(Path.Combine(payloads, $"{id}.err")).ConfigureAwait(false);
            return new VmCommandResult(script, exitCode, output, error, timedOut, started.Elapsed);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new VmLabException(
                $"The VM did not answer `{script.Trim()}` within {seconds + 30} s (its limit was {seconds} s): the agent or the VM hangs." +
                $"\nLast console lines:\n{ConsoleTail()}");
        }
        catch (VmLabException e) when (e is not VmCommandException)
        {
            throw new VmLabException($"`{script.Trim()}` got no answer: {e.Message}\nqemu: {_qemu.Output.Trim()}\nLast console lines:\n{ConsoleTail()}", e);
        }
        finally
        {
            TryDelete(scriptPath);
        }
    }

    /// <summary>Runs a program with arguments, each quoted for bash; see <see cref="RunAsync(string, TimeSpan?, CancellationToken)"/>.</summary>
    public Task<VmCommandResult> RunAsync(IEnumerable<string> command, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        RunAsync(string.Join(' ', command.Select(Quote)), timeout, cancellationToken);

    /// <summary>
    /// Systemd VMs: waits until the boot is over (`systemctl is-system-running --wait`) and returns the state,
    /// e.g. "running" or "degraded".
    /// </summary>
    public async Task<string> WaitForSystemdAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (Init != VmInit.Systemd)
        {
            throw new InvalidOperationException("This VM runs the small init, not systemd; start it with VmInit.Systemd.");
        }

        var result = await RunAsync("systemctl is-system-running --wait", timeout, cancellationToken).ConfigureAwait(false);
        if (result.TimedOut)
        {
            throw new VmLabException($"systemd did not finish booting within {timeout.TotalSeconds:0} s: {result}\nLast console lines:\n{ConsoleTail()}");
        }

        return result.StandardOutput.Trim();
    }

    /// <summary>The last lines of the guest's serial console (kernel messages, init and systemd status).</summary>
    public string ConsoleTail(int lines = 40)
    {
        try
        {
            using var stream = new FileStream(ConsoleLogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            var all = reader.ReadToEnd().Split('\n');
            return string.Join('\n', all.TakeLast(lines)).TrimEnd();
        }
        catch (IOException)
        {
            return "(no console log)";
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _qemu.DisposeAsync().ConfigureAwait(false);
        await _channel.DisposeAsync().ConfigureAwait(false);
        RemoveDirectory(WorkDirectory);
    }

    /// <summary>Quotes one word for bash: 'it'\''s'.</summary>
    public static string Quote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c, StringComparison.Ordinal))
            ? word
            : "'" + word.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private string Preamble()
    {
        var preamble = new StringBuilder();
        foreach (var (name, value) in _environment)
        {
            preamble.Append(CultureInfo.InvariantCulture, $"export {name}={Quote(value)}\n");
        }

        return preamble.ToString();
    }

    private VmLabException BootFailure(string what, Exception? inner)
    {
        var output = _qemu.Output.Trim();
        var message = $"The VM ({Init}, {Accelerator.Name}: {Accelerator.Reason}) did not boot: {what}." +
            (output.Length > 0 ? $"\nqemu: {output}" : "") +
            $"\nCommand: {_qemu.CommandLine}\nLast console lines:\n{ConsoleTail()}";
        return inner is null ? new VmLabException(message) : new VmLabException(message, inner);
    }

    private static async Task<string> ReadAndDeleteAsync(string path)
    {
        if (!File.Exists(path))
        {
            return "";
        }

        var text = await File.ReadAllTextAsync(path).ConfigureAwait(false);
        TryDelete(path);
        return text;
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // The VM was disposed meanwhile and its directory is gone.
        }
    }

    private static void CheckPrerequisites()
    {
        if (!OperatingSystem.IsLinux() || Interop.Libc.GetEuid() != 0)
        {
            throw new VmLabException("The VM lab runs on Linux as root (it shares / with the VM and reads /boot).");
        }

        var missing = new[] { QemuProcess.Program, "setsid", "xz" }
            .Where(p => !(Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => d.Length > 0 && File.Exists(Path.Combine(d, p))))
            .ToList();
        if (missing.Count > 0)
        {
            throw new VmLabException($"The VM lab needs {string.Join(", ", missing)} on PATH; run .ci/prerequisites as root.");
        }
    }

    /// <summary>
    /// Removes the directories of VMs whose test process was killed before it could dispose them (their qemu died
    /// with it, through the watchdog): the pid file names a process that is gone, or there is none after 10 minutes.
    /// </summary>
    private static void RemoveAbandonedWorkDirectories()
    {
        foreach (var directory in Directory.GetDirectories(Path.GetTempPath(), WorkDirectoryPrefix + "*"))
        {
            if (IsAbandoned(directory))
            {
                RemoveDirectory(directory);
            }
        }
    }

    internal static bool IsAbandoned(string directory)
    {
        try
        {
            var pidFile = Path.Combine(directory, "qemu.pid");
            if (!File.Exists(pidFile))
            {
                // Being started by another test process right now, or crashed before qemu ran.
                return Directory.GetLastWriteTimeUtc(directory) < DateTime.UtcNow.AddMinutes(-10);
            }

            var cmdline = int.TryParse(File.ReadAllText(pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && File.Exists($"/proc/{pid}/cmdline")
                    ? File.ReadAllText($"/proc/{pid}/cmdline")
                    : "";
            return !cmdline.Contains(directory, StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false; // Removed meanwhile, or its qemu exited as we looked; the next sweep decides.
        }
    }

    private static void RemoveDirectory(string directory)
    {
        try
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Trace.TraceWarning($"vmlab: could not remove {directory}: {e.Message}");
            Console.Error.WriteLine($"vmlab: could not remove {directory}: {e.Message}");
        }
    }
}
