using System.Net;
using System.Text.Json;
using Switchover.Processes;

namespace Switchover.Migration.Plan;

/// <summary>A policy-routing rule as `ip -j rule show` reports it.</summary>
public sealed record RuleFact(bool IPv6, int Priority, string Table, IReadOnlyDictionary<string, string> Selectors)
{
    public bool IsLocalTable => Table == "local" && Selectors.Count == 0;
}

/// <summary>
/// A FOU receive port as `ip -j fou show` reports it: UDP to <paramref name="Port"/> of this family is handed to IP
/// protocol <paramref name="Protocol"/> (47 for GRE in UDP), or to GUE when <paramref name="Protocol"/> is null.
/// </summary>
public sealed record FouPortFact(bool IPv6, int Port, int? Protocol)
{
    public override string ToString() =>
        $"port {Port} {(Protocol is { } p ? "ipproto " + p.ToString(System.Globalization.CultureInfo.InvariantCulture) : "gue")}{(IPv6 ? " -6" : string.Empty)}";
}

/// <summary>What the planner needs to know about a host before it plans: read once, then planning is pure.</summary>
public sealed record HostFacts(
    IReadOnlyList<IPAddress> LocalAddresses,
    IReadOnlyList<RuleFact> Rules,
    IReadOnlyDictionary<string, string> Sysctls,
    string? Uplink,
    bool TunnelDeviceExists,
    bool HasIPv6,
    IReadOnlyList<(bool IPv6, string Table, string Device)> DefaultRoutes,
    IReadOnlyList<string> NftTables)
{
    /// <summary>The existing tunnel device's kind (`ip -d link`: gre, ip6gre, tun), when it exists and says.</summary>
    public string? TunnelDeviceKind { get; init; }

    /// <summary>Which device holds each local address (`ip -j addr`), when read from the host.</summary>
    public IReadOnlyList<(IPAddress Address, string Device)> AddressDevices { get; init; } = [];

    /// <summary>
    /// The FOU receive ports of this host (both families), when read (<see cref="WithFouAsync"/>) and the kernel has
    /// FOU; empty otherwise. See <see cref="FouUnavailable"/>.
    /// </summary>
    public IReadOnlyList<FouPortFact> FouPorts { get; init; } = [];

    /// <summary>
    /// Why this kernel cannot do FOU (`ip fou show` failed: no fou module, which asking for its generic netlink
    /// family would have loaded), or null when it can or was not asked (plain GRE, the userspace dataplane).
    /// </summary>
    public string? FouUnavailable { get; init; }

    /// <summary>The FOU port of this family on <paramref name="port"/>, or null when there is none.</summary>
    public FouPortFact? FouPort(bool ipv6, int port) => FouPorts.FirstOrDefault(f => f.IPv6 == ipv6 && f.Port == port);

    public bool Owns(IPAddress address) => LocalAddresses.Contains(address);

    /// <summary>The device that holds a local address, or null when not known.</summary>
    public string? DeviceOf(IPAddress address) => AddressDevices.FirstOrDefault(a => a.Address.Equals(address)).Device;

    public string? Sysctl(string key) => Sysctls.TryGetValue(key, out var value) ? value : null;

    /// <summary>Reads the facts of the host this process runs in (its network namespace).</summary>
    internal static async Task<HostFacts> ReadAsync(ICommandRunner runner, string tunnelDevice, IPAddress remoteOuter, IEnumerable<string> sysctlKeys,
        CancellationToken cancellationToken)
    {
        var owned = ParseAddresses((await Ip(runner, cancellationToken, "-j", "addr", "show").ConfigureAwait(false)).StandardOutput);
        var addresses = owned.Select(a => a.Address).ToList();
        var hasIPv6 = Directory.Exists("/proc/sys/net/ipv6");
        var rules = ParseRules((await Ip(runner, cancellationToken, "-j", "-4", "rule", "show").ConfigureAwait(false)).StandardOutput, ipv6: false).ToList();
        if (hasIPv6)
        {
            rules.AddRange(ParseRules((await Ip(runner, cancellationToken, "-j", "-6", "rule", "show").ConfigureAwait(false)).StandardOutput, ipv6: true));
        }

        var route = await runner.TryRunAsync(Command.Create("ip", "-j", "route", "get", remoteOuter.ToString()), cancellationToken).ConfigureAwait(false);
        var uplink = route.ExitCode == 0 ? ParseRouteDevice(route.StandardOutput) : null;
        var link = await runner.TryRunAsync(Command.Create("ip", "-d", "-j", "link", "show", "dev", tunnelDevice), cancellationToken).ConfigureAwait(false);

        var defaultRoutes = new List<(bool, string, string)>();
        foreach (var ipv6 in hasIPv6 ? new[] { false, true } : [false])
        {
            var routes = await runner.TryRunAsync(Command.Create("ip", "-j", ipv6 ? "-6" : "-4", "route", "show", "table", "all", "default"), cancellationToken)
                .ConfigureAwait(false);
            if (routes.ExitCode == 0)
            {
                defaultRoutes.AddRange(ParseDefaultRoutes(routes.StandardOutput).Select(r => (ipv6, r.Table, r.Device)));
            }
        }

        var tables = await runner.TryRunAsync(Command.Create("nft", "list", "tables"), cancellationToken).ConfigureAwait(false);
        var nftTables = tables.ExitCode == 0
            ? tables.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => l.Replace("table ", string.Empty, StringComparison.Ordinal)).ToList()
            : [];

        var sysctls = new Dictionary<string, string>();
        foreach (var key in sysctlKeys.Distinct())
        {
            var result = await runner.TryRunAsync(Command.Create("sysctl", "-n", key), cancellationToken).ConfigureAwait(false);
            if (result.ExitCode == 0)
            {
                sysctls[key] = result.StandardOutput.Trim();
            }
        }

        return new HostFacts(addresses, rules, sysctls, uplink, link.ExitCode == 0, hasIPv6, defaultRoutes, nftTables)
        {
            TunnelDeviceKind = link.ExitCode == 0 ? ParseLinkKind(link.StandardOutput) : null,
            AddressDevices = owned,
        };
    }

    /// <summary>
    /// These facts with the host's FOU ports (GRE in UDP on the kernel dataplane only): the fou module (and fou6 for
    /// an IPv6 outer) loaded (<see cref="Gre.FouModules"/>), then `ip -j [-6] fou show`; or why the kernel has none.
    /// </summary>
    internal async Task<HostFacts> WithFouAsync(ICommandRunner runner, bool ipv6Outer, CancellationToken cancellationToken)
    {
        var modules = await Gre.FouModules.LoadAsync(runner, ipv6Outer, cancellationToken).ConfigureAwait(false);
        var ports = new List<FouPortFact>();
        foreach (var ipv6 in HasIPv6 ? new[] { false, true } : [false])
        {
            // Both families asked for: whether `ip fou show` lists only its family's ports depends on the iproute2 version.
            var result = await runner.TryRunAsync(Command.Create("ip", ipv6 ? ["-j", "-6", "fou", "show"] : ["-j", "fou", "show"]), cancellationToken)
                .ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                var error = result.StandardError.Trim().ReplaceLineEndings(" ");
                return this with
                {
                    FouPorts = [],
                    FouUnavailable = (error.Length > 0 ? error : $"ip fou show exited with {result.ExitCode}") + (modules is null ? "" : "; " + modules),
                };
            }

            ports.AddRange(ParseFouPorts(result.StandardOutput, ipv6).Where(p => !ports.Contains(p)));
        }

        // fou answers, but an IPv6 outer's `encap fou` needs fou6 as well.
        return this with { FouPorts = ports, FouUnavailable = ipv6Outer && modules is not null ? "IPv6 FOU (fou6) is missing: " + modules : null };
    }

    /// <summary>
    /// The ports of `ip -j [-6] fou show`: [{"port":4754,"ipproto":47,"family":"inet"}] (GUE ports say "gue" instead of
    /// ipproto). Without a family the port is of <paramref name="ipv6"/>, the family asked for. No ports: empty output.
    /// </summary>
    internal static IEnumerable<FouPortFact> ParseFouPorts(string json, bool ipv6)
    {
        if (string.IsNullOrWhiteSpace(json))
        {
            return [];
        }

        using var document = JsonDocument.Parse(json);
        var ports = new List<FouPortFact>();
        foreach (var entry in document.RootElement.EnumerateArray())
        {
            if (!entry.TryGetProperty("port", out var port))
            {
                continue;
            }

            var family = entry.TryGetProperty("family", out var f) ? f.GetString() == "inet6" : ipv6;
            int? protocol = entry.TryGetProperty("ipproto", out var p) ? p.GetInt32() : null;
            ports.Add(new FouPortFact(family, port.GetInt32(), protocol));
        }

        return ports;
    }

    /// <summary>The kind of a link in `ip -d -j link show` (gre, ip6gre, tun...); null without link info.</summary>
    internal static string? ParseLinkKind(string json)
    {
        using var document = JsonDocument.Parse(json);
        foreach (var link in document.RootElement.EnumerateArray())
        {
            if (link.TryGetProperty("linkinfo", out var info) && info.TryGetProperty("info_kind", out var kind))
            {
                return kind.GetString();
            }
        }

        return null;
    }

    internal static IReadOnlyList<(IPAddress Address, string Device)> ParseAddresses(string json)
    {
        using var document = JsonDocument.Parse(json);
        var addresses = new List<(IPAddress, string)>();
        foreach (var link in document.RootElement.EnumerateArray())
        {
            if (!link.TryGetProperty("addr_info", out var infos))
            {
                continue;
            }

            var device = link.TryGetProperty("ifname", out var name) ? name.GetString() ?? string.Empty : string.Empty;
            foreach (var info in infos.EnumerateArray())
            {
                if (info.TryGetProperty("local", out var local) && IPAddress.TryParse(local.GetString(), out var address))
                {
                    addresses.Add((address, device));
                }
            }
        }

        return addresses;
    }

    internal static IEnumerable<RuleFact> ParseRules(string json, bool ipv6)
    {
        using var document = JsonDocument.Parse(json);
        var rules = new List<RuleFact>();
        foreach (var rule in document.RootElement.EnumerateArray())
        {
            var selectors = new Dictionary<string, string>();
            int priority = 0;
            var table = string.Empty;
            foreach (var property in rule.EnumerateObject())
            {
                var value = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString()! : property.Value.GetRawText();
                switch (property.Name)
                {
                    case "priority":
                        priority = property.Value.GetInt32();
                        break;
                    case "table":
                        table = value;
                        break;
                    case "src" or "dst" when value == "all":
                    case "flags" or "protocol" or "srclen" or "dstlen":
                        break;
                    default:
                        selectors[property.Name] = value;
                        break;
                }
            }

            rules.Add(new RuleFact(ipv6, priority, table, selectors));
        }

        return rules;
    }

    internal static IEnumerable<(string Table, string Device)> ParseDefaultRoutes(string json)
    {
        using var document = JsonDocument.Parse(json);
        var routes = new List<(string, string)>();
        foreach (var route in document.RootElement.EnumerateArray())
        {
            if (route.TryGetProperty("dev", out var dev))
            {
                var table = route.TryGetProperty("table", out var t) ? (t.ValueKind == JsonValueKind.String ? t.GetString()! : t.GetRawText()) : "main";
                routes.Add((table, dev.GetString()!));
            }
        }

        return routes;
    }

    internal static string? ParseRouteDevice(string json)
    {
        using var document = JsonDocument.Parse(json);
        foreach (var route in document.RootElement.EnumerateArray())
        {
            if (route.TryGetProperty("dev", out var dev))
            {
                return dev.GetString();
            }
        }

        return null;
    }

    private static Task<CommandResult> Ip(ICommandRunner runner, CancellationToken cancellationToken, params string[] arguments) =>
        runner.RunAsync(Command.Create("ip", arguments), cancellationToken);
}
