using System.Reflection;

namespace Switchover.VmLab.Boot;

/// <summary>The guest's scripts and units (Guest/ in this project), embedded in the assembly.</summary>
internal static class GuestFiles
{
    private const string Prefix = "Guest/";

    /// <summary>Name (relative to Guest/, e.g. "systemd/vmlab.target") to content, in a stable order.</summary>
    public static IReadOnlyList<KeyValuePair<string, byte[]>> All { get; } = Load();

    public static byte[] Get(string name) =>
        All.FirstOrDefault(f => f.Key == name).Value
        ?? throw new InvalidOperationException($"The VM lab assembly has no embedded guest file '{Prefix}{name}'.");

    private static List<KeyValuePair<string, byte[]>> Load()
    {
        var assembly = typeof(GuestFiles).Assembly;
        var files = new List<KeyValuePair<string, byte[]>>();
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            files.Add(new(resource[Prefix.Length..].Replace('\\', '/'), memory.ToArray()));
        }

        return files;
    }
}
