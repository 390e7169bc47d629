using System.Diagnostics;
using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Tests;

/// <summary>Builds real boot images from the installed Debian kernel into a cache of its own (a few seconds each).</summary>
public sealed class BootImageTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("vmlab-cache-test-").FullName;
    private readonly GuestKernel _kernel = GuestKernel.Find();

    public void Dispose() => Directory.Delete(_cache, recursive: true);

    [Fact(Timeout = 180_000)]
    public async Task A_boot_image_is_reused_while_its_inputs_are_the_same_and_replaced_when_they_change()
    {
        var first = await BootImage.GetOrBuildAsync(_kernel, ["veth"], _cache, CancellationToken.None);
        var reuse = Stopwatch.StartNew();
        var again = await BootImage.GetOrBuildAsync(_kernel, ["veth"], _cache, CancellationToken.None);
        reuse.Stop();
        var other = await BootImage.GetOrBuildAsync(_kernel, ["veth", "ip_gre"], _cache, CancellationToken.None);

        Assert.Equal(first, again with { Modules = first.Modules });
        Assert.True(reuse.Elapsed < TimeSpan.FromSeconds(2), $"reusing the cached image took {reuse.Elapsed}");
        Assert.NotEqual(first.Key, other.Key);
        Assert.False(File.Exists(first.Initramfs), "the stale image of the same kernel release was not removed");
        Assert.Equal([Path.GetDirectoryName(other.Initramfs)!], Directory.GetDirectories(_cache));
        Assert.Contains(other.Modules, m => m.EndsWith("/ip_gre.ko", StringComparison.Ordinal));
        Assert.Contains(other.Modules, m => m.EndsWith("/gre.ko", StringComparison.Ordinal));
    }

    [Fact(Timeout = 180_000)]
    public async Task An_incomplete_cached_image_is_rebuilt()
    {
        var first = await BootImage.GetOrBuildAsync(_kernel, ["veth"], _cache, CancellationToken.None);
        File.Delete(first.Initramfs);

        var rebuilt = await BootImage.GetOrBuildAsync(_kernel, ["veth"], _cache, CancellationToken.None);

        Assert.Equal(first.Key, rebuilt.Key);
        Assert.True(new FileInfo(rebuilt.Initramfs).Length > 1_000_000);
    }

    [Fact(Timeout = 180_000)]
    public async Task The_default_modules_bring_the_soft_dependency_crc32c_generic_along()
    {
        var image = await BootImage.GetOrBuildAsync(_kernel, null, _cache, CancellationToken.None);
        var names = image.Modules.Select(KernelModules.NameOf).ToList();

        Assert.Contains("crc32c_generic", names);
        Assert.True(names.IndexOf("crc32c_generic") < names.IndexOf("libcrc32c"));
        Assert.True(names.IndexOf("libcrc32c") < names.IndexOf("nf_tables"));
        Assert.Equal("vmlinux", Path.GetFileName(image.KernelImage));
    }
}
