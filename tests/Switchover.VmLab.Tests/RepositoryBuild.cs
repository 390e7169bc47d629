namespace Switchover.VmLab.Tests;

/// <summary>
/// The repository these tests were built from and its build outputs, which the VM sees at the same paths (the host's
/// root over 9p). Not under /tmp, /run or /dev: the guest mounts fresh ones there, so a checkout there is invisible
/// in the VM (a clone in /tmp failed every VM test with "No such file or directory" before this said why).
/// </summary>
internal static class RepositoryBuild
{
    private static readonly string[] HiddenInGuest = ["/tmp/", "/run/", "/dev/"];
    private static readonly Lazy<string> LazyRoot = new(FindRoot);

    /// <summary>The folder that holds Switchover.sln, above this test assembly.</summary>
    public static string Root => LazyRoot.Value;

    /// <summary>Release or Debug: the folder this test assembly was built into.</summary>
    public static string Configuration { get; } = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name;

    /// <summary>A build output's path; throws, saying to build, when it is missing.</summary>
    public static string Built(string project, string file)
    {
        var path = Path.Combine(Root, "artifacts", "bin", project, Configuration, file);
        return File.Exists(path)
            ? path
            : throw new FileNotFoundException($"{path} is missing. Build the solution first: dotnet build Switchover.sln -c {Configuration}.", path);
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Switchover.sln")))
        {
            dir = dir.Parent;
        }

        var root = dir?.FullName ?? throw new DirectoryNotFoundException($"No Switchover.sln above {AppContext.BaseDirectory}.");
        var hidden = HiddenInGuest.FirstOrDefault(h => (root + "/").StartsWith(h, StringComparison.Ordinal));
        return hidden is null
            ? root
            : throw new InvalidOperationException($"The repository is at {root}, under {hidden}, which the VM lab's guest mounts afresh: " +
                "the VM would not see its build outputs. Clone it elsewhere (e.g. under /work or /srv) and build there.");
    }
}
