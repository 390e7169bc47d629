using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Switchover.Agent;

/// <summary>One namespace of the policy file as written.</summary>
public sealed class AgentPolicyNamespace
{
    /// <summary>Users (names or numeric uids) whose processes may run generations of the namespace.</summary>
    public List<string> Users { get; set; } = [];

    /// <summary>Groups (names or numeric gids); a process whose primary or a supplementary group is one of them may.</summary>
    public List<string> Groups { get; set; } = [];

    /// <summary>The public ports the namespace may take over. A port belongs to one namespace at most.</summary>
    public List<int> Ports { get; set; } = [];
}

/// <summary>The policy file as written: <c>{ "namespaces": { "echo": { "users": ["nobody"], "ports": [8080] } } }</c>.</summary>
public sealed class AgentPolicyFile
{
    public Dictionary<string, AgentPolicyNamespace> Namespaces { get; set; } = [];
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(AgentPolicyFile))]
internal sealed partial class AgentPolicyJsonContext : JsonSerializerContext;

/// <summary>The policy file could not be read or is not valid. The message lists every problem.</summary>
public sealed class AgentPolicyException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Which users and groups may own which namespace and which public ports. Root (uid 0) may do anything: it could run
/// nft itself. Everyone else may use only the namespaces the file names for them, with only those ports.
/// </summary>
internal sealed partial class AgentPolicy
{
    public const string DefaultPath = "/etc/switchover/agent.json";

    private readonly Dictionary<string, Grant> _grants;
    private readonly Dictionary<int, string> _portOwners;

    private AgentPolicy(string path, Dictionary<string, Grant> grants)
    {
        Path = path;
        _grants = grants;
        _portOwners = grants.SelectMany(g => g.Value.Ports.Select(p => (Port: p, Namespace: g.Key))).ToDictionary(x => x.Port, x => x.Namespace);
    }

    public string Path { get; }

    public IReadOnlyCollection<string> Namespaces => _grants.Keys;

    /// <summary>Reads and validates the file; throws <see cref="AgentPolicyException"/> naming every problem at once.</summary>
    public static AgentPolicy Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AgentPolicyException($"Cannot read the agent policy {path}: {e.Message}. " +
                "Create it (see samples/systemd/agent.json) or pass --policy PATH.", e);
        }

        return Parse(path, text, ResolveUser, ResolveGroup);
    }

    // internal for testing: name resolution is injected so that tests need no particular /etc/passwd.
    internal static AgentPolicy Parse(string path, string text, Func<string, uint?> resolveUser, Func<string, uint?> resolveGroup)
    {
        AgentPolicyFile file;
        try
        {
            file = JsonSerializer.Deserialize(text, AgentPolicyJsonContext.Default.AgentPolicyFile)
                ?? throw new JsonException("the file holds null");
        }
        catch (JsonException e)
        {
            throw new AgentPolicyException($"The agent policy {path} is not valid JSON of the expected shape: {e.Message} " +
                "Expected: { \"namespaces\": { \"NAME\": { \"users\": [\"USER\"], \"groups\": [\"GROUP\"], \"ports\": [PORT] } } }.", e);
        }

        var errors = new List<string>();
        var grants = new Dictionary<string, Grant>(StringComparer.Ordinal);
        var portOwners = new Dictionary<int, string>();
        foreach (var (name, entry) in file.Namespaces ?? [])
        {
            if (NamespaceName.Validate(name) is { } invalid)
            {
                errors.Add($"namespace '{name}': {invalid}");
                continue;
            }

            if (entry is null)
            {
                errors.Add($"namespace '{name}': null; give it users or groups, and ports.");
                continue;
            }

            var uids = Resolve(entry.Users, "user", resolveUser, name, errors);
            var gids = Resolve(entry.Groups, "group", resolveGroup, name, errors);
            if ((entry.Users?.Count ?? 0) + (entry.Groups?.Count ?? 0) == 0)
            {
                errors.Add($"namespace '{name}': no users and no groups; name who may run it.");
            }

            if ((entry.Ports?.Count ?? 0) == 0)
            {
                errors.Add($"namespace '{name}': no ports; list the public ports it may take over.");
            }

            foreach (var port in entry.Ports ?? [])
            {
                if (port is < 1 or > 65535)
                {
                    errors.Add($"namespace '{name}': port {port} is not a TCP port (1 to 65535).");
                }
                else if (portOwners.TryGetValue(port, out var owner) && owner != name)
                {
                    errors.Add($"port {port} is given to namespaces '{owner}' and '{name}'; a public port belongs to one namespace.");
                }
                else
                {
                    portOwners[port] = name;
                }
            }

            grants[name] = new Grant([.. uids], [.. gids], [.. entry.Ports ?? []]);
        }

        if (errors.Count > 0)
        {
            throw new AgentPolicyException($"The agent policy {path} is invalid; the agent does not start. Fix these:" + Environment.NewLine +
                string.Join(Environment.NewLine, errors.Select(e => "  - " + e)));
        }

        return new AgentPolicy(path, grants);
    }

    /// <summary>Null when the peer may use the namespace, else why not (for the client and the log).</summary>
    public string? MayUse(AgentPeer peer, NamespaceName name)
    {
        if (peer.IsRoot)
        {
            return null;
        }

        if (!_grants.TryGetValue(name.Value, out var grant))
        {
            return $"uid {peer.Uid} may not use namespace '{name}': the agent policy {Path} does not name it.";
        }

        return grant.Uids.Contains(peer.Uid) || grant.Gids.Any(peer.InGroup)
            ? null
            : $"uid {peer.Uid} (gid {peer.Gid}) may not use namespace '{name}': the agent policy {Path} gives it to " +
              $"{Describe(grant)} only.";
    }

    /// <summary>Null when the peer may use the namespace with every one of these public ports, else why not.</summary>
    public string? MayTakeOver(AgentPeer peer, NamespaceName name, IEnumerable<int> publicPorts)
    {
        if (MayUse(peer, name) is { } refused)
        {
            return refused;
        }

        if (peer.IsRoot)
        {
            return null;
        }

        var grant = _grants[name.Value];
        foreach (var port in publicPorts.Distinct().Order())
        {
            if (!grant.Ports.Contains(port))
            {
                var owner = _portOwners.TryGetValue(port, out var other) ? $"it belongs to namespace '{other}'" : "no namespace has it";
                return $"namespace '{name}' may not take over public port {port}: {owner} in the agent policy {Path} " +
                    $"(namespace '{name}' has {string.Join(", ", grant.Ports.Order())}).";
            }
        }

        return null;
    }

    private static string Describe(Grant grant) =>
        string.Join(" and ", new[]
        {
            grant.Uids.Count > 0 ? "uid " + string.Join(", ", grant.Uids.Order()) : null,
            grant.Gids.Count > 0 ? "gid " + string.Join(", ", grant.Gids.Order()) : null,
        }.Where(s => s is not null));

    private static List<uint> Resolve(List<string>? names, string kind, Func<string, uint?> resolve, string ns, List<string> errors)
    {
        var ids = new List<uint>();
        foreach (var entry in names ?? [])
        {
            if (uint.TryParse(entry, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            {
                ids.Add(id);
            }
            else if (resolve(entry) is { } resolved)
            {
                ids.Add(resolved);
            }
            else
            {
                errors.Add($"namespace '{ns}': {kind} '{entry}' does not exist on this host (give a name it knows, or a number).");
            }
        }

        return ids;
    }

    private sealed record Grant(HashSet<uint> Uids, HashSet<uint> Gids, HashSet<int> Ports);

    // getpwnam_r/getgrnam_r: NSS answers (files, LDAP, systemd's dynamic users), not a parse of /etc/passwd.
    private static unsafe uint? ResolveUser(string name) => Lookup(name, GetPwNam, uidOffset: 16);

    private static unsafe uint? ResolveGroup(string name) => Lookup(name, GetGrNam, uidOffset: 16);

    private unsafe delegate int NssLookup(string name, byte* entry, byte* buffer, nuint length, byte** result);

    private static unsafe uint? Lookup(string name, NssLookup lookup, int uidOffset)
    {
        // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; ... } and struct group { char *gr_name;
        // char *gr_passwd; gid_t gr_gid; ... }: the id sits after two pointers in both (LP64).
        var entry = stackalloc byte[64];
        var buffer = new byte[16384];
        fixed (byte* bytes = buffer)
        {
            byte* result = null;
            return lookup(name, entry, bytes, (nuint)buffer.Length, &result) == 0 && result is not null
                ? *(uint*)(result + uidOffset)
                : null;
        }
    }

    [LibraryImport("libc", EntryPoint = "getpwnam_r", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int GetPwNam(string name, byte* entry, byte* buffer, nuint length, byte** result);

    [LibraryImport("libc", EntryPoint = "getgrnam_r", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int GetGrNam(string name, byte* entry, byte* buffer, nuint length, byte** result);
}
