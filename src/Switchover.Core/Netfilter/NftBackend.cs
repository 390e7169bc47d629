using System.Runtime.InteropServices;
using Switchover.Interop;
using Switchover.Processes;

namespace Switchover.Netfilter;

/// <summary>What nft said about a batch of commands: its status (0: done) and its output and error text.</summary>
internal sealed record NftResult(int Status, string Output, string Error)
{
    public bool Succeeded => Status == 0;
}

/// <summary>
/// The one transport nft text goes through: commands exactly as <c>nft -f</c> reads them, applied as one batch.
/// <see cref="LibNftablesBackend"/> by default; <see cref="NftProgramBackend"/> when a program was asked for.
/// </summary>
internal interface INftBackend
{
    /// <summary>How failures name the transport: "libnftables" or the program's path.</summary>
    string Name { get; }

    /// <summary>Runs the commands; with <paramref name="dryRun"/> they are parsed and evaluated against the kernel's ruleset but not committed.</summary>
    /// <exception cref="CommandException">The transport itself could not run (library or program missing, timeout).</exception>
    Task<NftResult> RunAsync(string commands, bool dryRun, CancellationToken cancellationToken);

    /// <summary>The command line a user would type to do the same, for messages.</summary>
    string Describe(bool dryRun);
}

/// <summary>Runs the <c>nft</c> program: <c>nft [--check] -f -</c> with the commands on standard input.</summary>
internal sealed class NftProgramBackend(ICommandRunner runner, string path) : INftBackend
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    public string Name => path;

    public string Describe(bool dryRun) => dryRun ? $"{path} --check -f -" : $"{path} -f -";

    public async Task<NftResult> RunAsync(string commands, bool dryRun, CancellationToken cancellationToken)
    {
        var command = (dryRun ? Command.Create(path, "--check", "-f", "-") : Command.Create(path, "-f", "-"))
            with { StandardInput = commands, Timeout = Timeout };
        var result = await runner.TryRunAsync(command, cancellationToken).ConfigureAwait(false);
        return new NftResult(result.ExitCode, result.StandardOutput, result.StandardError);
    }
}

/// <summary>
/// libnftables in this process: one context for the process, used under a lock (a context is not thread-safe, and
/// nft_ctx_new's one-time initialisation is not either). The context keeps its netlink socket for the life of the
/// process, so a transaction costs the kernel's batch and libnftables' parse, not a program start. The socket
/// belongs to the network namespace of the thread that created the context: the first call's.
/// </summary>
internal sealed class LibNftablesBackend : INftBackend, IDisposable
{
    // One lock for every context: it also guards nft_ctx_new's process-wide one-time initialisation.
    private static readonly Lock Gate = new();

    private SafeNftContextHandle? _context;

    private LibNftablesBackend()
    {
    }

    /// <summary>The process's context, created on first use.</summary>
    public static LibNftablesBackend Instance { get; } = new();

    /// <summary>A context of its own, created now, in the network namespace of the calling thread (tests use it from a namespace thread).</summary>
    internal static LibNftablesBackend OpenHere()
    {
        var backend = new LibNftablesBackend();
        lock (Gate)
        {
            backend._context = Open();
        }

        return backend;
    }

    public void Dispose()
    {
        lock (Gate)
        {
            _context?.Dispose();
            _context = null;
        }
    }

    public string Name => "libnftables";

    public string Describe(bool dryRun) => dryRun ? "nft --check -f - (libnftables, in-process)" : "nft -f - (libnftables, in-process)";

    public Task<NftResult> RunAsync(string commands, bool dryRun, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (Gate)
        {
            var context = _context ??= Open();
            LibNftables.SetDryRun(context, dryRun);
            try
            {
                var status = LibNftables.RunCommand(context, commands);

                // Both buffers are read (and so rewound) after every call, so one call's text never leaks into the next.
                var output = Marshal.PtrToStringUTF8(LibNftables.GetOutputBuffer(context)) ?? string.Empty;
                var error = Marshal.PtrToStringUTF8(LibNftables.GetErrorBuffer(context)) ?? string.Empty;
                return Task.FromResult(new NftResult(status, output, error));
            }
            finally
            {
                LibNftables.SetDryRun(context, false);
            }
        }
    }

    private static SafeNftContextHandle Open()
    {
        // nft_ctx_new calls exit() when it cannot open its netlink socket (netlink_init_error): open one first, so that
        // a process that may not gets an exception instead of dying.
        try
        {
            NetlinkSocket.Open(NetlinkSocket.NetlinkNetfilter).Dispose();
        }
        catch (NetlinkException e)
        {
            throw new CommandException(LibNftables.Library, null, e.Message,
                $"libnftables cannot talk to the kernel: {e.Message}. Is nf_tables available in this kernel (modprobe nf_tables)?", e);
        }

        SafeNftContextHandle context;
        try
        {
            var before = OpenDescriptors();
            context = LibNftables.ContextNew(LibNftables.ContextDefault);
            if (context.IsInvalid)
            {
                throw new CommandException(LibNftables.Library, null, string.Empty, "nft_ctx_new returned no context (out of memory?).");
            }

            // libmnl opens the context's socket without SOCK_CLOEXEC; a program this process starts must not inherit it.
            foreach (var fd in OpenDescriptors().Except(before))
            {
                Libc.SetCloseOnExec(fd);
            }
        }
        catch (DllNotFoundException e)
        {
            throw new CommandException(LibNftables.Library, null, string.Empty,
                $"{LibNftables.Library} could not be loaded ({e.Message}).", e);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CommandException(LibNftables.Library, null, string.Empty,
                $"{LibNftables.Library} lacks a function Switchover needs ({e.Message}): install nftables 0.9.3 or newer.", e);
        }

        if (LibNftables.BufferOutput(context) != 0 || LibNftables.BufferError(context) != 0)
        {
            context.Dispose();
            throw new CommandException(LibNftables.Library, null, string.Empty, "libnftables could not buffer its output (out of memory?).");
        }

        return context;
    }

    private static HashSet<int> OpenDescriptors()
    {
        var descriptors = new HashSet<int>();
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (int.TryParse(Path.GetFileName(entry), out var fd))
            {
                descriptors.Add(fd);
            }
        }

        return descriptors;
    }
}
