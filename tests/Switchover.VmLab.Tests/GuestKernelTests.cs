using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Tests;

public sealed class GuestKernelTests
{
    [Fact]
    public void The_newest_complete_Debian_kernel_is_chosen()
    {
        var root = Directory.CreateTempSubdirectory("vmlab-kernels-").FullName;
        try
        {
            var boot = Directory.CreateDirectory(Path.Combine(root, "boot")).FullName;
            var modules = Directory.CreateDirectory(Path.Combine(root, "modules")).FullName;
            foreach (var release in new[] { "6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-60-amd64", "6.18.0-fc" })
            {
                Directory.CreateDirectory(Path.Combine(modules, release, "kernel"));
                if (release != "6.1.0-60-amd64")
                {
                    File.WriteAllText(Path.Combine(boot, $"vmlinuz-{release}"), "");
                }
            }

            var kernel = GuestKernel.Find(null, boot, modules);

            Assert.Equal("6.1.0-57-amd64", kernel.Release);
            Assert.Equal(Path.Combine(boot, "vmlinuz-6.1.0-57-amd64"), kernel.ImagePath);
            Assert.Equal(Path.Combine(modules, "6.1.0-57-amd64"), kernel.ModulesDirectory);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Without_a_kernel_package_the_error_says_to_run_the_prerequisites()
    {
        var error = Assert.Throws<VmLabException>(() => GuestKernel.Find(null, "/nonexistent/boot", "/nonexistent/modules"));

        Assert.Contains(".ci/prerequisites", error.Message, StringComparison.Ordinal);
    }
}
