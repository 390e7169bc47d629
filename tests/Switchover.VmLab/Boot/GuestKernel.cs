namespace Switchover.VmLab.Boot;

/// <summary>
/// A Debian kernel package installed on the host (linux-image-amd64 pulls in the newest): its image in /boot and its
/// modules in /lib/modules. Installing it only adds files; the host keeps running its own kernel.
/// </summary>
public sealed record GuestKernel(string Release, string ImagePath, string ModulesDirectory)
{
    /// <summary>
    /// The newest installed Debian kernel (release ending in -amd64) that has both /boot/vmlinuz-&lt;release&gt; and
    /// /lib/modules/&lt;release&gt;/kernel, or exactly <paramref name="release"/> when given.
    /// </summary>
    public static GuestKernel Find(string? release = null, string bootDirectory = "/boot", string modulesRoot = "/lib/modules")
    {
        var candidates = Directory.Exists(modulesRoot)
            ? Directory.GetDirectories(modulesRoot).Select(Path.GetFileName).OfType<string>()
            : [];
        var complete = candidates
            .Where(r => release is null ? r.EndsWith("-amd64", StringComparison.Ordinal) : r == release)
            .Where(r => File.Exists(Path.Combine(bootDirectory, $"vmlinuz-{r}")) && Directory.Exists(Path.Combine(modulesRoot, r, "kernel")))
            .OrderByDescending(r => r, ReleaseComparer.Instance)
            .ToList();
        if (complete.Count == 0)
        {
            var which = release is null ? "a Debian kernel (*-amd64)" : $"kernel {release}";
            throw new VmLabException(
                $"The VM lab needs {which} with {bootDirectory}/vmlinuz-<release> and {modulesRoot}/<release>/kernel; none is installed. " +
                "Run .ci/prerequisites as root (it installs linux-image-amd64; the running kernel is not changed).");
        }

        var chosen = complete[0];
        return new GuestKernel(chosen, Path.Combine(bootDirectory, $"vmlinuz-{chosen}"), Path.Combine(modulesRoot, chosen));
    }

    /// <summary>Orders "6.1.0-57-amd64" after "6.1.0-9-amd64": numeric runs compare as numbers.</summary>
    internal sealed class ReleaseComparer : IComparer<string>
    {
        public static readonly ReleaseComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            var a = Parts(x ?? "");
            var b = Parts(y ?? "");
            for (var i = 0; i < Math.Min(a.Count, b.Count); i++)
            {
                var result = long.TryParse(a[i], out var m) && long.TryParse(b[i], out var n)
                    ? m.CompareTo(n)
                    : string.CompareOrdinal(a[i], b[i]);
                if (result != 0)
                {
                    return result;
                }
            }

            return a.Count.CompareTo(b.Count);
        }

        private static List<string> Parts(string release) =>
            [.. System.Text.RegularExpressions.Regex.Matches(release, "[0-9]+|[^0-9.\\-]+").Select(m => m.Value)];
    }
}
