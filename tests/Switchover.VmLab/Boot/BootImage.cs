using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Switchover.VmLab.Boot;

/// <summary>
/// What qemu boots: the kernel image (the extracted vmlinux for a PVH start, or the bzImage itself) and the lab's
/// initramfs: busybox-static, the guest scripts and the modules the VM needs with everything they depend on.
/// Built at test time into a cache directory (never committed) and reused while its inputs are the same: the key
/// hashes the kernel image, busybox, the guest files, the module list and the builder's version, so a kernel update,
/// an edited script or another module list builds a new one and removes the stale one of the same release.
/// </summary>
public sealed record BootImage(string KernelRelease, string KernelImage, string KernelImageKind, string Initramfs, string Key, IReadOnlyList<string> Modules)
{
    /// <summary>Bumped whenever the layout of the initramfs changes in a way the key does not see.</summary>
    private const string BuilderVersion = "1";

    private const string BusyboxPath = "/bin/busybox";
    private const string KeyFile = "key";

    /// <summary>
    /// Modules the lab loads before anything runs. The root needs virtio_pci, 9pnet_virtio, 9p and overlay; the agent
    /// virtio_console; the rest is what Switchover's tests use (nftables with TPROXY, NAT redirect, fib and conntrack;
    /// GRE tunnels; veth and tun). Their dependencies and soft dependencies (crc32c for libcrc32c) come along. After the
    /// switch to the host root, the kernel can load any other module itself (modprobe and /lib/modules are the host's).
    /// Not fou and fou6: Debian 6.1's fou declares no alias for its generic netlink family, so nothing but Switchover
    /// loads it for `ip fou add`, and nothing requests fou6 for ip6gre's `encap fou`; they stay out of this list, so
    /// the GRE-in-UDP cases show that Switchover loads them itself (FouModules).
    /// </summary>
    public static IReadOnlyList<string> DefaultModules { get; } =
    [
        "virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay",
        "nf_tables", "nft_ct", "nft_nat", "nft_chain_nat", "nft_redir", "nft_masq", "nft_tproxy", "nft_socket",
        "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6", "nft_reject_inet", "nft_limit", "nft_log", "nft_compat",
        "nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nf_tproxy_ipv4", "nf_tproxy_ipv6",
        "xt_TPROXY", "xt_socket", "xt_conntrack", "xt_REDIRECT", "xt_mark", "xt_tcpudp",
        "gre", "ip_gre", "ip6_gre", "veth", "tun",
    ];

    public static string DefaultCacheDirectory =>
        Environment.GetEnvironmentVariable("SWITCHOVER_VMLAB_CACHE") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Path.GetTempPath(), "switchover-vmlab-cache");

    /// <summary>The cached boot image for these inputs, built first if there is none.</summary>
    public static async Task<BootImage> GetOrBuildAsync(
        GuestKernel kernel, IReadOnlyList<string>? modules, string? cacheDirectory, CancellationToken cancellationToken)
    {
        modules ??= DefaultModules;
        cacheDirectory ??= DefaultCacheDirectory;
        if (!File.Exists(BusyboxPath))
        {
            throw new VmLabException($"{BusyboxPath} is missing; run .ci/prerequisites (it installs busybox-static).");
        }

        var busybox = await File.ReadAllBytesAsync(BusyboxPath, cancellationToken).ConfigureAwait(false);
        if (!IsStatic(busybox))
        {
            throw new VmLabException($"{BusyboxPath} is linked dynamically and cannot run in the initramfs; install busybox-static (run .ci/prerequisites).");
        }

        var key = await KeyAsync(kernel, busybox, modules, cancellationToken).ConfigureAwait(false);
        var directory = Path.Combine(cacheDirectory, $"{kernel.Release}-{key}");
        if (TryLoad(directory, kernel.Release, key) is { } cached)
        {
            return cached;
        }

        Directory.CreateDirectory(cacheDirectory);
        RemoveStale(cacheDirectory, kernel.Release, directory);
        if (Directory.Exists(directory))
        {
            // Same key but incomplete (a file was deleted, a disk filled up): build it again.
            Directory.Delete(directory, recursive: true);
        }

        var staging = Path.Combine(cacheDirectory, $".building-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            await BuildAsync(kernel, busybox, modules, key, staging, cancellationToken).ConfigureAwait(false);
            try
            {
                Directory.Move(staging, directory);
            }
            catch (IOException) when (Directory.Exists(directory))
            {
                // Another test process built the same image at the same time; theirs is as good as ours.
            }
        }
        finally
        {
            if (Directory.Exists(staging))
            {
                Directory.Delete(staging, recursive: true);
            }
        }

        return TryLoad(directory, kernel.Release, key)
            ?? throw new VmLabException($"The VM lab built its boot image but cannot find it in {directory}.");
    }

    private static async Task BuildAsync(
        GuestKernel kernel, byte[] busybox, IReadOnlyList<string> modules, string key, string staging, CancellationToken cancellationToken)
    {
        var graph = await ReadModuleGraphAsync(kernel, Path.Combine(staging, "depmod"), cancellationToken).ConfigureAwait(false);
        var order = graph.LoadOrder(modules);

        await using (var file = File.Create(Path.Combine(staging, "initramfs.cpio")))
        {
            var archive = new NewcArchive(file);
            foreach (var directory in new[] { "dev", "proc", "sys", "bin", "vmlab" })
            {
                archive.AddDirectory(directory);
            }

            // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
            archive.AddCharacterDevice("dev/console", 5, 1);
            archive.AddFile("bin/busybox", busybox, NewcArchive.Executable);
            foreach (var (name, content) in GuestFiles.All)
            {
                var executable = name is "init" or "agent" or "small-init";
                archive.AddFile(name == "init" ? "init" : $"vmlab/{name}", content, executable ? NewcArchive.Executable : NewcArchive.Readable);
            }

            foreach (var module in order)
            {
                var content = await File.ReadAllBytesAsync(Path.Combine(kernel.ModulesDirectory, module), cancellationToken).ConfigureAwait(false);
                archive.AddFile($"lib/modules/{kernel.Release}/{module}", content);
            }

            archive.AddFile("vmlab/modules.load", Encoding.UTF8.GetBytes(string.Join('\n', order) + "\n"));
            archive.Finish();
        }

        var (extracted, reason) = await PvhKernel.TryExtractPvhAsync(kernel.ImagePath, Path.Combine(staging, "vmlinux"), cancellationToken)
            .ConfigureAwait(false);
        var manifest = new StringBuilder()
            .AppendLine(CultureInfo.InvariantCulture, $"release {kernel.Release}")
            .AppendLine(CultureInfo.InvariantCulture, $"kernel {(extracted ? "vmlinux" : kernel.ImagePath)}")
            .AppendLine(CultureInfo.InvariantCulture, $"kind {(extracted ? reason : "bzImage (" + reason + ")")}")
            .AppendLine(CultureInfo.InvariantCulture, $"built {DateTimeOffset.UtcNow:O}");
        foreach (var module in order)
        {
            manifest.AppendLine(CultureInfo.InvariantCulture, $"module {module}");
        }

        await File.WriteAllTextAsync(Path.Combine(staging, "manifest"), manifest.ToString(), cancellationToken).ConfigureAwait(false);
        Directory.Delete(Path.Combine(staging, "depmod"), recursive: true);
        // Written last: a directory with a key file is complete.
        await File.WriteAllTextAsync(Path.Combine(staging, KeyFile), key, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs depmod -b on a tree whose kernel/ is a link to the installed modules, so the dependency files are those
    /// of exactly these module files, whatever state the package left /lib/modules/&lt;release&gt;/modules.dep in.
    /// </summary>
    private static async Task<KernelModules> ReadModuleGraphAsync(GuestKernel kernel, string root, CancellationToken cancellationToken)
    {
        var tree = Path.Combine(root, "lib", "modules", kernel.Release);
        Directory.CreateDirectory(tree);
        File.CreateSymbolicLink(Path.Combine(tree, "kernel"), Path.Combine(kernel.ModulesDirectory, "kernel"));
        foreach (var file in new[] { "modules.order", "modules.builtin", "modules.builtin.modinfo" })
        {
            var source = Path.Combine(kernel.ModulesDirectory, file);
            if (File.Exists(source))
            {
                File.Copy(source, Path.Combine(tree, file));
            }
        }

        await HostCommand.RunAsync(DepmodPath(), ["-b", root, kernel.Release], TimeSpan.FromMinutes(2), cancellationToken).ConfigureAwait(false);
        string Read(string name) => File.Exists(Path.Combine(tree, name)) ? File.ReadAllText(Path.Combine(tree, name)) : "";
        return KernelModules.Parse(Read("modules.dep"), Read("modules.softdep"), Read("modules.alias"), Read("modules.builtin"));
    }

    private static readonly string[] DepmodPaths = ["/usr/sbin/depmod", "/sbin/depmod"];

    private static string DepmodPath() =>
        DepmodPaths.FirstOrDefault(File.Exists)
        ?? throw new VmLabException("depmod is missing; run .ci/prerequisites (it installs kmod).");

    private static async Task<string> KeyAsync(GuestKernel kernel, byte[] busybox, IReadOnlyList<string> modules, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string text) => hash.AppendData(Encoding.UTF8.GetBytes(text + "\n"));
        Add($"builder {BuilderVersion}");
        Add($"release {kernel.Release}");
        hash.AppendData(await File.ReadAllBytesAsync(kernel.ImagePath, cancellationToken).ConfigureAwait(false));
        hash.AppendData(busybox);
        foreach (var module in modules)
        {
            Add($"module {module}");
        }

        foreach (var (name, content) in GuestFiles.All)
        {
            Add($"guest {name} {content.Length}");
            hash.AppendData(content);
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
    }

    private static BootImage? TryLoad(string directory, string release, string key)
    {
        var manifestPath = Path.Combine(directory, "manifest");
        var keyPath = Path.Combine(directory, KeyFile);
        if (!File.Exists(keyPath) || File.ReadAllText(keyPath).Trim() != key || !File.Exists(manifestPath))
        {
            return null;
        }

        var fields = File.ReadAllLines(manifestPath)
            .Select(l => l.Split(' ', 2))
            .Where(p => p.Length == 2)
            .ToLookup(p => p[0], p => p[1]);
        var kernel = fields["kernel"].FirstOrDefault();
        if (kernel is null)
        {
            return null;
        }

        var kernelImage = Path.IsPathRooted(kernel) ? kernel : Path.Combine(directory, kernel);
        var initramfs = Path.Combine(directory, "initramfs.cpio");
        return File.Exists(kernelImage) && File.Exists(initramfs)
            ? new BootImage(release, kernelImage, fields["kind"].FirstOrDefault() ?? "", initramfs, key, [.. fields["module"]])
            : null;
    }

    private static void RemoveStale(string cacheDirectory, string release, string keep)
    {
        foreach (var directory in Directory.GetDirectories(cacheDirectory))
        {
            var name = Path.GetFileName(directory);
            var stale = (name.StartsWith(release + "-", StringComparison.Ordinal) && directory != keep)
                || (name.StartsWith(".building-", StringComparison.Ordinal) && Directory.GetLastWriteTimeUtc(directory) < DateTime.UtcNow.AddHours(-1));
            if (stale)
            {
                try
                {
                    Directory.Delete(directory, recursive: true);
                }
                catch (IOException)
                {
                    // In use by a concurrent run; the next build removes it.
                }
            }
        }
    }

    // A static executable has no PT_INTERP program header.
    private static bool IsStatic(byte[] elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7F || elf[4] != 2)
        {
            return false;
        }

        var programHeaders = (int)BitConverter.ToUInt64(elf, 0x20);
        var entrySize = BitConverter.ToUInt16(elf, 0x36);
        var count = BitConverter.ToUInt16(elf, 0x38);
        for (var i = 0; i < count; i++)
        {
            if (BitConverter.ToUInt32(elf, programHeaders + (i * entrySize)) == 3) // PT_INTERP
            {
                return false;
            }
        }

        return true;
    }
}
