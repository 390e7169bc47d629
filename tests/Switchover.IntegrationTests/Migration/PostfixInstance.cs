using System.Diagnostics;
using System.Text;
using MimeKit;
using Switchover.Lab;

namespace Switchover.IntegrationTests.Migration;

/// <summary>
/// A real Postfix (Debian's) running in a lab namespace with its own configuration, queue, data and mailbox
/// directories under one temporary directory: <c>postfix -c CONF start</c>, run as root. Postfix lets root name any
/// configuration directory; alternate_config_directories in the default main.cf only guards the set-gid commands
/// (postdrop, postqueue) against unprivileged users, so /etc/postfix is neither read for this nor changed.
/// <c>postfix start</c> creates the queue's subdirectories with their owners and set-gid bits (post-install
/// create-missing), as on a fresh install. Disposing stops the instance and deletes the directory.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class PostfixInstance : IAsyncDisposable
{
    // virtual_uid_maps and virtual_gid_maps in the sample's main.cf: the virtual(8) agent writes the Maildir as nobody.
    private const string MailboxOwner = "65534:65534";
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(30);
    private static readonly string[] MaildirFolders = ["new", "cur"];
    private readonly NetworkNamespace _host;
    private bool _started;
    private bool _stopped;

    private PostfixInstance(NetworkNamespace host, string name, string root)
    {
        _host = host;
        Name = name;
        Root = root;
    }

    public string Name { get; }

    /// <summary>The temporary directory that holds everything of this instance.</summary>
    public string Root { get; }

    public string ConfigDirectory => Path.Combine(Root, "conf");

    public string LogFile => Path.Combine(Root, "maillog");

    /// <summary>The Maildir that virtual_mailbox_maps = static:postmaster/ delivers every accepted message to.</summary>
    public string Maildir => Path.Combine(Root, "mail", "postmaster");

    public string Log => File.Exists(LogFile) ? File.ReadAllText(LogFile) : "(no maillog)";

    /// <summary>
    /// Copies <paramref name="mainCf"/> and <paramref name="masterCf"/> into a new temporary directory, points the
    /// per-run locations there, applies <paramref name="settings"/> with <c>postconf -e</c>, and starts Postfix in
    /// <paramref name="host"/>. <c>postfix start</c> returns once the master daemon has bound its listeners.
    /// </summary>
    public static async Task<PostfixInstance> StartAsync(NetworkNamespace host, string name, string mainCf, string masterCf,
        IReadOnlyDictionary<string, string> settings, CancellationToken cancellationToken)
    {
        var root = Directory.CreateTempSubdirectory($"switchover-mta-{name}-").FullName;
        var instance = new PostfixInstance(host, name, root);
        try
        {
            // The daemons run as postfix and the delivery agent as nobody: both must pass through the temporary
            // directory, which CreateTempSubdirectory makes 0700.
            File.SetUnixFileMode(root, (UnixFileMode)0x1ED /* 0755 */);
            Directory.CreateDirectory(instance.ConfigDirectory);
            Directory.CreateDirectory(Path.Combine(root, "queue"));
            Directory.CreateDirectory(Path.Combine(root, "mail"));
            File.Copy(mainCf, Path.Combine(instance.ConfigDirectory, "main.cf"));
            File.Copy(masterCf, Path.Combine(instance.ConfigDirectory, "master.cf"));
            await host.RunAsync("chown", [MailboxOwner, Path.Combine(root, "mail")], cancellationToken);

            var locations = new Dictionary<string, string>
            {
                ["queue_directory"] = Path.Combine(root, "queue"),
                // Not created here: Postfix makes it, owned by postfix, as it must be.
                ["data_directory"] = Path.Combine(root, "data"),
                ["virtual_mailbox_base"] = Path.Combine(root, "mail"),
                // Logged by postlogd to a file: there is no syslog daemon in a lab namespace. maillog_file must start
                // with one of maillog_file_prefixes (/var and /dev/stdout by default).
                ["maillog_file"] = instance.LogFile,
                ["maillog_file_prefixes"] = root,
            };
            await host.RunAsync("postconf", ["-c", instance.ConfigDirectory, "-e",
                .. locations.Concat(settings).Select(s => $"{s.Key}={s.Value}")], cancellationToken);

            var started = await host.TryRunAsync("postfix", ["-c", instance.ConfigDirectory, "start"], cancellationToken, TimeSpan.FromSeconds(60));
            if (started.ExitCode != 0)
            {
                // Postfix prints a fatal error only to a terminal (or syslog): postfix check, which makes the same checks,
                // run on a pseudo-terminal says why.
                var check = await host.TryRunAsync("script", ["-qec", $"postfix -c {instance.ConfigDirectory} check", "/dev/null"], cancellationToken);
                throw new InvalidOperationException($"postfix -c {instance.ConfigDirectory} start in {host} failed ({started.ExitCode}): "
                                                    + $"{started.StandardError}{check.StandardOutput.Trim()}\nmaillog:\n{instance.Log}");
            }

            instance._started = true;
            return instance;
        }
        catch
        {
            await instance.DisposeAsync();
            throw;
        }
    }

    /// <summary>The messages delivered to this instance's Maildir (new/ and cur/; tmp/ holds only deliveries in progress).</summary>
    public IReadOnlyList<MimeMessage> Mailbox()
    {
        var messages = new List<MimeMessage>();
        foreach (var folder in MaildirFolders.Select(f => Path.Combine(Maildir, f)).Where(Directory.Exists))
        {
            messages.AddRange(Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal).Select(f => MimeMessage.Load(f)));
        }

        return messages;
    }

    /// <summary>The queue as <c>postqueue -j</c> lists it: one JSON object per queued message, empty when nothing is queued.</summary>
    public async Task<string> QueueAsync(CancellationToken cancellationToken)
    {
        // In the namespace: postqueue checks inet_interfaces against the addresses it sees.
        var queue = await _host.RunAsync("postqueue", ["-c", ConfigDirectory, "-j"], cancellationToken);
        return queue.StandardOutput.Trim();
    }

    /// <summary>
    /// <c>postfix stop</c>, then waits for every process of this instance to exit; what is still there after
    /// <paramref name="grace"/> is killed. Returns the processes that had to be killed ("pid comm"), empty when
    /// Postfix stopped by itself.
    /// </summary>
    public async Task<IReadOnlyList<string>> StopAsync(TimeSpan grace)
    {
        if (_stopped)
        {
            return [];
        }

        _stopped = true;
        using var timeout = new CancellationTokenSource(CleanupTimeout);
        var stop = await _host.TryRunAsync("postfix", ["-c", ConfigDirectory, "stop"], timeout.Token, CleanupTimeout);
        var deadline = Stopwatch.StartNew();
        var left = Processes();
        while (left.Count > 0 && deadline.Elapsed < grace)
        {
            await Task.Delay(100, CancellationToken.None);
            left = Processes();
        }

        var killed = new List<string>();
        foreach (var pid in left)
        {
            try
            {
                using var process = Process.GetProcessById(pid);
                killed.Add($"{pid} {process.ProcessName}");
                process.Kill();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // It exited meanwhile.
            }
        }

        // A start that failed leaves nothing to stop, and postfix stop says so; only the processes count then.
        if (stop.ExitCode != 0 && _started)
        {
            killed.Add($"(postfix stop exited {stop.ExitCode}: {stop.StandardError.Trim()})");
        }

        return killed;
    }

    /// <summary>
    /// The pids of this instance's processes: the master and every daemon it forked carry MAIL_CONFIG=CONF in their
    /// environment (postfix -c sets it, master's import_environment passes it on). The pid file alone would miss
    /// daemons whose master is gone.
    /// </summary>
    public IReadOnlyList<int> Processes()
    {
        var marker = Encoding.UTF8.GetBytes("MAIL_CONFIG=" + ConfigDirectory);
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }

            try
            {
                var environment = File.ReadAllBytes(Path.Combine(dir, "environ"));
                foreach (var range in environment.AsSpan().Split((byte)0))
                {
                    if (environment.AsSpan(range).SequenceEqual(marker))
                    {
                        pids.Add(pid);
                        break;
                    }
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Gone, or a kernel thread.
            }
        }

        return pids;
    }

    public async ValueTask DisposeAsync()
    {
        var killed = await StopAsync(TimeSpan.FromSeconds(10));
        if (killed.Count > 0)
        {
            await Console.Error.WriteLineAsync($"Postfix instance {Name} in {_host} did not stop by itself; killed: {string.Join(", ", killed)}");
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"Could not delete {Root} of Postfix instance {Name}: {e.Message}. Delete it by hand.");
        }
    }

    public override string ToString() => $"postfix {Name} in {_host} ({Root})";
}
