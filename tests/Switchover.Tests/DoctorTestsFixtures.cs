using Switchover.Cli.Doctor;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>
/// Facts for DoctorAnalysis: a healthy host (root, tools, every kernel feature loaded) with the ruleset of one firewall
/// shape. The rulesets are real: Doctor/make-rulesets.sh loads each Doctor/Shapes/NAME.sh into a throwaway network
/// namespace and dumps what doctor reads there (nft -j list ruleset, and iptables-save where doctor would run it)
/// into Doctor/Rulesets/.
/// </summary>
internal static class DoctorFixtures
{
    public static DoctorFacts Healthy { get; } = new()
    {
        Nft = new ToolFact("nft", "nft", "nftables v1.0.6 (Lester Gooch #5)", null),
        Conntrack = new ToolFact("conntrack", "conntrack", "conntrack v1.4.7 (conntrack-tools)", null),
        RulesetJson = """{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}""",
        Kernel = new KernelFacts
        {
            Release = "6.1.0-28-amd64",
            ProcModules = string.Concat(KernelCheck.Features.Select(f => $"{f.Module} 16384 1 - Live 0x0000000000000000\n")),
        },
        EffectiveUid = 0,
        EffectiveCapabilities = 0x000001ffffffffff,
        LocalPortRange = (32768, 60999),
    };

    public static DoctorFacts Shape(string name)
    {
        string? Read(string suffix)
        {
            var path = Path.Combine(AppContext.BaseDirectory, "Doctor", "Rulesets", name + suffix);
            return File.Exists(path) ? File.ReadAllText(path) : null;
        }

        IptablesDump? Dump(string program) => Read("." + program) is { } text ? new IptablesDump(program, text, null) : null;
        List<string> Lines(string suffix) => Read(suffix)?.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList() ?? [];

        return Healthy with
        {
            RulesetJson = Read(".json") ?? throw new FileNotFoundException($"No golden ruleset {name}.json; run Doctor/make-rulesets.sh {name}."),
            IptablesNft = Dump("iptables-nft-save"),
            Ip6tablesNft = Dump("ip6tables-nft-save"),
            LegacyTables = Lines(".ip_tables_names"),
            Legacy6Tables = Lines(".ip6_tables_names"),
            IptablesLegacy = Dump("iptables-legacy-save"),
            Ip6tablesLegacy = Dump("ip6tables-legacy-save"),
        };
    }

    public static DoctorReport Analyze(DoctorFacts facts, int[]? ports = null, string? ns = null, Steering? steering = null) =>
        DoctorAnalysis.Analyze(facts, new DoctorRequest(ports ?? [8080], ns is null ? null : NamespaceName.Parse(ns), steering));

    public static Finding Single(this DoctorReport report, string check, string? subject = null)
    {
        var found = report.Findings.Where(f => f.Check == check && (subject is null || f.Subject == subject)).ToList();
        Assert.True(found.Count == 1, $"Expected one '{check}' finding{(subject is null ? "" : $" about {subject}")}, got {found.Count}:\n{DoctorText.Render(report)}");
        return found[0];
    }

    public static void AssertNone(this DoctorReport report, string check) =>
        Assert.True(report.Findings.All(f => f.Check != check), $"Expected no '{check}' finding:\n{DoctorText.Render(report)}");

    /// <summary>A namespace 'echo' whose state records one live active generation.</summary>
    public static NamespaceFacts Namespace(long generation, int publicPort, int privatePort, bool alive = true) =>
        Namespace(generation, [new PortMapping(publicPort, privatePort)], alive);

    public static NamespaceFacts Namespace(long generation, IReadOnlyList<PortMapping> ports, bool alive = true)
    {
        var name = NamespaceName.Parse("echo");
        var state = NamespaceState.Empty(name).With(new GenerationRecord(generation, 3552, 1, GenerationState.Active,
            new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero), ports));
        return new NamespaceFacts(name, "/run/switchover/echo", state with { LastGenerationId = generation }, null,
            new Dictionary<long, bool> { [generation] = alive });
    }
}
