using Switchover.State;

namespace Switchover.Cli.Doctor;

/// <summary>What the user asked doctor to check.</summary>
/// <param name="Ports">--port values; empty: the namespace's public ports, if any.</param>
/// <param name="Steering">--steering; null: what the namespace's table does, else the default.</param>
internal sealed record DoctorRequest(IReadOnlyList<int> Ports, NamespaceName? Namespace, Steering? Steering);

/// <summary>
/// Everything doctor read from the host, raw. <see cref="DoctorAnalysis"/> turns it into findings without any I/O,
/// so tests feed it recorded facts (golden rulesets).
/// </summary>
internal sealed record DoctorFacts
{
    public required ToolFact Nft { get; init; }

    public required ToolFact Conntrack { get; init; }

    /// <summary>The output of <c>nft -j list ruleset</c>; null when it could not be read (<see cref="RulesetError"/> says why).</summary>
    public string? RulesetJson { get; init; }

    public string? RulesetError { get; init; }

    /// <summary>iptables-nft-save and ip6tables-nft-save, read when the ruleset holds xt expressions of that family.</summary>
    public IptablesDump? IptablesNft { get; init; }

    public IptablesDump? Ip6tablesNft { get; init; }

    /// <summary>/proc/net/ip_tables_names: iptables-legacy tables, which nft does not see.</summary>
    public IReadOnlyList<string> LegacyTables { get; init; } = [];

    public IReadOnlyList<string> Legacy6Tables { get; init; } = [];

    public IptablesDump? IptablesLegacy { get; init; }

    public IptablesDump? Ip6tablesLegacy { get; init; }

    public required KernelFacts Kernel { get; init; }

    /// <summary>Effective uid and CapEff of this process (/proc/self/status); null when unreadable.</summary>
    public int? EffectiveUid { get; init; }

    public ulong? EffectiveCapabilities { get; init; }

    /// <summary>net.ipv4.ip_local_port_range: where the kernel picks private ports from.</summary>
    public (int Low, int High)? LocalPortRange { get; init; }

    public NamespaceFacts? Namespace { get; init; }
}

/// <summary>A program doctor looked for: its version line, or why it could not be run.</summary>
internal sealed record ToolFact(string Name, string Path, string? Version, string? Error, bool NotFound = false);

/// <summary>An iptables-save dump (text), or why there is none.</summary>
internal sealed record IptablesDump(string Command, string? Text, string? Error);

/// <summary>
/// What the kernel offers. <see cref="ProcModules"/> is null when /proc/modules does not exist (a kernel without
/// loadable modules); <see cref="Config"/> is the kernel configuration (/proc/config.gz, /boot/config-RELEASE), if found.
/// </summary>
internal sealed record KernelFacts
{
    public string? Release { get; init; }

    public string? ProcModules { get; init; }

    /// <summary>The names under /sys/module among those doctor asked about (loaded, or built in with parameters).</summary>
    public IReadOnlySet<string> SysModules { get; init; } = new HashSet<string>();

    public string? Config { get; init; }

    public string? ConfigSource { get; init; }

    /// <summary><c>modinfo -n NAME</c>: its output when it found the module (a path, or "(builtin)"), null when it did not.</summary>
    public IReadOnlyDictionary<string, string?> Modinfo { get; init; } = new Dictionary<string, string?>();

    public bool ModinfoMissing { get; init; }

    /// <summary>/proc/sys/net/ipv6 exists in this network namespace.</summary>
    public bool Ipv6 { get; init; } = true;

    /// <summary>net.ipv6.conf.all.disable_ipv6 is 1.</summary>
    public bool Ipv6Disabled { get; init; }
}

/// <summary>The namespace's state as read (without the lock), and which of its generations are alive.</summary>
internal sealed record NamespaceFacts(
    NamespaceName Name,
    string StateDirectory,
    NamespaceState? State,
    string? StateError,
    IReadOnlyDictionary<long, bool> Alive);
