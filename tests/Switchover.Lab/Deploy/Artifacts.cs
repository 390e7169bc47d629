namespace Switchover.Lab;

/// <summary>Where the built projects of this repository are (artifacts/bin/PROJECT/CONFIGURATION/).</summary>
public static class Artifacts
{
    private static readonly Lazy<(string Root, string Configuration)> Location = new(Find);

    public static string RepositoryRoot => Location.Value.Root;

    /// <summary>"debug" or "release": the configuration the running assembly was built in.</summary>
    public static string Configuration => Location.Value.Configuration;

    public static string EchoServer => Path("EchoServer", "EchoServer.dll");

    public static string TestServer => Path("Switchover.TestServer", "Switchover.TestServer.dll");

    public static string Cli => Path("Switchover.Cli", "switchover.dll");

    public static string Path(string project, string assembly)
    {
        var path = System.IO.Path.Combine(RepositoryRoot, "artifacts", "bin", project, Configuration, assembly);
        return File.Exists(path)
            ? path
            : throw new FileNotFoundException($"{path} is missing. Build the solution first: dotnet build Switchover.sln -c {Configuration}.", path);
    }

    private static (string, string) Find()
    {
        // AppContext.BaseDirectory is artifacts/bin/<project>/<configuration>/.
        var configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Switchover.sln")))
            {
                return (dir.FullName, configuration);
            }
        }

        throw new DirectoryNotFoundException($"No Switchover.sln above {AppContext.BaseDirectory}.");
    }
}
