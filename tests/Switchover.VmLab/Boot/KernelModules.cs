namespace Switchover.VmLab.Boot;

/// <summary>
/// The module graph of one kernel release, read from the files depmod(8) writes: modules.dep (hard dependencies,
/// the whole closure on each line), modules.softdep (what a module asks modprobe to load first or after, e.g.
/// libcrc32c's "pre: crc32c"), modules.alias (which modules provide a name such as crc32c) and modules.builtin.
/// </summary>
internal sealed class KernelModules
{
    private readonly Dictionary<string, string> _pathByName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string[]> _dependencies = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _softBefore = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _softAfter = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _modulesByAlias = new(StringComparer.Ordinal);
    private readonly HashSet<string> _builtin = new(StringComparer.Ordinal);

    private KernelModules()
    {
    }

    /// <summary>Number of loadable modules in modules.dep.</summary>
    public int Count => _pathByName.Count;

    public static KernelModules Parse(string modulesDep, string modulesSoftdep, string modulesAlias, string modulesBuiltin)
    {
        var modules = new KernelModules();
        foreach (var line in Lines(modulesDep))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new FormatException($"modules.dep: expected 'path: dependencies', got '{line}'.");
            }

            var path = line[..colon].Trim();
            modules._pathByName[NameOf(path)] = path;
            modules._dependencies[path] = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }

        foreach (var line in Lines(modulesSoftdep))
        {
            // softdep <module> [pre: <names>...] [post: <names>...]; names without a section are "pre".
            var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length < 3 || words[0] != "softdep")
            {
                continue;
            }

            var module = Normalize(words[1]);
            var into = modules._softBefore;
            foreach (var word in words.Skip(2))
            {
                switch (word)
                {
                    case "pre:":
                        into = modules._softBefore;
                        break;
                    case "post:":
                        into = modules._softAfter;
                        break;
                    default:
                        Add(into, module, word);
                        break;
                }
            }
        }

        foreach (var line in Lines(modulesAlias))
        {
            var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length == 3 && words[0] == "alias")
            {
                Add(modules._modulesByAlias, words[1], Normalize(words[2]));
            }
        }

        foreach (var line in Lines(modulesBuiltin))
        {
            modules._builtin.Add(NameOf(line));
        }

        return modules;
    }

    /// <summary>
    /// Paths (relative to /lib/modules/&lt;release&gt;) of <paramref name="wanted"/> and everything they need, each
    /// after what it depends on, so that insmod in this order succeeds. A soft dependency that names an alias pulls in
    /// every module behind it (crc32c: crc32c_intel and crc32c_generic). Built-in modules are left out; an unknown
    /// wanted module throws, listing all of them.
    /// </summary>
    public IReadOnlyList<string> LoadOrder(IEnumerable<string> wanted)
    {
        var order = new List<string>();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        var unknown = new List<string>();
        foreach (var name in wanted)
        {
            var module = Normalize(name);
            if (_pathByName.ContainsKey(module))
            {
                Visit(module, order, visited);
            }
            else if (!_builtin.Contains(module))
            {
                unknown.Add(name);
            }
        }

        if (unknown.Count > 0)
        {
            throw new ArgumentException(
                $"The kernel has no module named {string.Join(", ", unknown)} (neither in modules.dep nor built in). " +
                "Check the names against `modinfo <name>` for the guest kernel.", nameof(wanted));
        }

        return order;
    }

    private void Visit(string module, List<string> order, HashSet<string> visited)
    {
        if (!visited.Add(module))
        {
            return;
        }

        var path = _pathByName[module];
        foreach (var soft in _softBefore.GetValueOrDefault(module) ?? [])
        {
            VisitSoft(soft, order, visited);
        }

        // modules.dep lists the whole closure; visiting each entry orders the closure among itself.
        foreach (var dependency in _dependencies[path])
        {
            Visit(NameOf(dependency), order, visited);
        }

        order.Add(path);
        foreach (var soft in _softAfter.GetValueOrDefault(module) ?? [])
        {
            VisitSoft(soft, order, visited);
        }
    }

    private void VisitSoft(string name, List<string> order, HashSet<string> visited)
    {
        var module = Normalize(name);
        if (_pathByName.ContainsKey(module))
        {
            Visit(module, order, visited);
            return;
        }

        // A soft dependency is optional: a name nothing provides (or a built-in one) is not an error.
        foreach (var provider in _modulesByAlias.GetValueOrDefault(name) ?? [])
        {
            if (_pathByName.ContainsKey(provider))
            {
                Visit(provider, order, visited);
            }
        }
    }

    /// <summary>kernel/net/ipv4/ip_gre.ko (or .ko.xz, .ko.zst) -> ip_gre; dashes and underscores are the same to kmod.</summary>
    internal static string NameOf(string path)
    {
        var file = path[(path.LastIndexOf('/') + 1)..];
        var ko = file.IndexOf(".ko", StringComparison.Ordinal);
        return Normalize(ko >= 0 ? file[..ko] : file);
    }

    private static string Normalize(string name) => name.Replace('-', '_');

    private static void Add(Dictionary<string, List<string>> map, string key, string value)
    {
        if (!map.TryGetValue(key, out var list))
        {
            map[key] = list = [];
        }

        if (!list.Contains(value))
        {
            list.Add(value);
        }
    }

    private static IEnumerable<string> Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'));
}
