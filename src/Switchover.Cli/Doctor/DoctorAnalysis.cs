using System.Globalization;
using Switchover.Cli.Doctor.Rules;
using Switchover.State;

namespace Switchover.Cli.Doctor;

/// <summary>
/// Facts in, findings out: no I/O. The order of the lines is the order a user fixes things in: can switchover run
/// at all (privileges, tools, kernel), the namespace, then the firewall and what it does to the port.
/// </summary>
internal static class DoctorAnalysis
{
    private const int NetAdmin = 12; // CAP_NET_ADMIN, include/uapi/linux/capability.h

    public static DoctorReport Analyze(DoctorFacts facts, DoctorRequest request)
    {
        var findings = new List<Finding>();
        findings.Add(Privileges(facts));
        findings.AddRange(Tools(facts));

        Ruleset? ruleset = null;
        var rulesetFindings = new List<Finding>();
        if (facts.RulesetJson is { } json)
        {
            try
            {
                ruleset = NftJsonReader.Read(json);
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or KeyNotFoundException or InvalidOperationException)
            {
                rulesetFindings.Add(new Finding("ruleset", null, Severity.Problem,
                    $"cannot read the output of 'nft -j list ruleset': {e.Message}", "report it with the output of 'nft -j list ruleset'"));
            }
        }
        else
        {
            rulesetFindings.Add(new Finding("ruleset", null, Severity.Problem,
                $"cannot read the ruleset: {facts.RulesetError ?? "nft did not run"}; the firewall checks were skipped",
                "run doctor as root, or with CAP_NET_ADMIN, with nft installed"));
        }

        if (ruleset is not null)
        {
            ruleset = AddIptables(ruleset, facts, rulesetFindings);
        }

        var ownTable = request.Namespace is { } ns ? ruleset?.Find("inet", ns.TableName) : null;
        var (steering, steeringSource) = DecideSteering(request, facts.Namespace?.State, ownTable);

        findings.AddRange(KernelCheck.Check(facts.Kernel, steering));
        if (facts.Namespace is { } nsFacts)
        {
            findings.AddRange(NamespaceCheck.Check(nsFacts, ruleset, ownTable));
        }

        findings.Add(SteeringFinding(steering, steeringSource, request));
        findings.AddRange(rulesetFindings);

        var ports = request.Ports.Count > 0 ? request.Ports : PortsOf(facts.Namespace?.State);
        if (ports.Count == 0)
        {
            findings.Add(new Finding("port", null, Severity.Info,
                request.Namespace is null ? "no port given: the port checks were skipped" : $"namespace '{request.Namespace}' has no public port recorded: the port checks were skipped",
                "pass --port P (or --namespace N of a running service)"));
        }

        if (ruleset is not null)
        {
            var (privatePorts, source) = PrivatePorts(facts);
            var context = new FirewallContext(ports, steering, request.Namespace, facts.Kernel.Ipv6 && !facts.Kernel.Ipv6Disabled, privatePorts, source);
            findings.AddRange(FirewallCheck.Check(ruleset, context));
        }

        return new DoctorReport(DoctorReport.CurrentVersion, request.Namespace?.Value, ports,
            steering == Steering.Tproxy ? "tproxy" : "redirect", steeringSource, findings);
    }

    private static Finding Privileges(DoctorFacts facts)
    {
        var root = facts.EffectiveUid == 0;
        var netAdmin = facts.EffectiveCapabilities is { } caps ? (caps & (1UL << NetAdmin)) != 0 : (bool?)null;
        var who = root ? "root" : facts.EffectiveUid is { } uid ? $"uid {uid.ToString(CultureInfo.InvariantCulture)}" : "an unknown user";
        return netAdmin switch
        {
            true => new Finding("privileges", null, Severity.Ok, $"running as {who}, with CAP_NET_ADMIN"),
            false when root => new Finding("privileges", null, Severity.Problem,
                "running as root, but without CAP_NET_ADMIN (a restricted container?): nft cannot change the ruleset",
                "grant CAP_NET_ADMIN (docker run --cap-add NET_ADMIN, or AmbientCapabilities=CAP_NET_ADMIN in the systemd unit)"),
            false => new Finding("privileges", null, Severity.Problem,
                $"running as {who} without CAP_NET_ADMIN: switchover cannot change the ruleset, and doctor cannot read it",
                "run as root, or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit)"),
            null => new Finding("privileges", null, Severity.Warning, $"running as {who}; cannot read CapEff from /proc/self/status"),
        };
    }

    private static IEnumerable<Finding> Tools(DoctorFacts facts)
    {
        // Switchover itself talks to the kernel in-process (libnftables, ctnetlink, sock_diag): the programs are for
        // doctor's own reading of the ruleset, for a person looking, and for Switchover:NftPath/ConntrackPath.
        foreach (var (tool, package, purpose) in new[]
        {
            (facts.Nft, "nftables", "doctor reads the ruleset with it, and Switchover:NftPath uses it (switchover itself uses libnftables1)"),
            (facts.Conntrack, "conntrack", "Switchover:ConntrackPath uses it, and you may want it to look at connections (the drain reads ctnetlink itself)"),
        })
        {
            if (tool.Version is not null)
            {
                yield return new Finding("tool", tool.Name, Severity.Ok, $"{tool.Version} ({tool.Path})");
            }
            else
            {
                yield return new Finding("tool", tool.Name, tool.NotFound ? Severity.Warning : Severity.Problem,
                    tool.NotFound ? $"{tool.Name} is not installed ({tool.Path}: {tool.Error}); {purpose}" : $"{tool.Name} does not run: {tool.Error}",
                    tool.NotFound ? $"apt-get install {package}" : null);
            }
        }
    }

    /// <summary>Legacy tables, and iptables-nft-save for the xt expressions nft can only name.</summary>
    private static Ruleset AddIptables(Ruleset ruleset, DoctorFacts facts, List<Finding> findings)
    {
        foreach (var (family, dump) in new[] { ("ip", facts.IptablesNft), ("ip6", facts.Ip6tablesNft) })
        {
            var xtTables = ruleset.Tables.Where(t => t.Family == family && t.HasXtExpressions).ToList();
            if (xtTables.Count == 0)
            {
                continue;
            }

            var names = string.Join(", ", xtTables.Select(t => t.Display));
            if (dump?.Text is not { } text)
            {
                findings.Add(new Finding("ruleset", dump?.Command ?? family, Severity.Warning,
                    $"{names} hold iptables matches that nft shows only by name, and {dump?.Command ?? "iptables-nft-save"} could not be read "
                    + $"({dump?.Error ?? "not run"}): rules that use them are not understood",
                    "install iptables (apt-get install iptables) so that doctor can read them"));
                continue;
            }

            var unmatched = IptablesSaveReader.Augment(ruleset, IptablesSaveReader.Parse(text), family);
            if (unmatched.Count > 0)
            {
                findings.Add(new Finding("ruleset", dump.Command, Severity.Warning,
                    $"{dump.Command} and nft list the chains {string.Join(", ", unmatched.Take(4).Select(c => c.Display))} differently: their iptables matches are not understood"));
            }
        }

        var legacy = new List<Table>();
        foreach (var (family, names, dump) in new[] { ("ip", facts.LegacyTables, facts.IptablesLegacy), ("ip6", facts.Legacy6Tables, facts.Ip6tablesLegacy) })
        {
            if (names.Count == 0)
            {
                continue;
            }

            if (dump?.Text is { } text)
            {
                var tables = IptablesSaveReader.ToTables(IptablesSaveReader.Parse(text), family);
                legacy.AddRange(tables);
                findings.Add(new Finding("iptables-legacy", family, Severity.Info,
                    $"iptables-legacy {(family == "ip" ? "IPv4" : "IPv6")} tables exist ({string.Join(", ", names)}); nft does not list them, doctor read them with {dump.Command}"));
            }
            else
            {
                findings.Add(new Finding("iptables-legacy", family, Severity.Warning,
                    $"iptables-legacy {(family == "ip" ? "IPv4" : "IPv6")} tables exist ({string.Join(", ", names)}), but {dump?.Command ?? "iptables-legacy-save"} could not be read "
                    + $"({dump?.Error ?? "not run"}): their rules are not checked, and they filter too",
                    "install iptables (apt-get install iptables), or move the rules to nftables"));
            }
        }

        return legacy.Count > 0 ? ruleset.With(legacy) : ruleset;
    }

    private static (Steering, string) DecideSteering(DoctorRequest request, NamespaceState? state, Table? ownTable)
    {
        if (request.Steering is { } chosen)
        {
            return (chosen, "option");
        }

        if (ownTable is not null && FirewallCheck.SteeringRules(ownTable) is { Count: > 0 } rules)
        {
            return (rules[0].Kind, "table");
        }

        // No steering rule to read (no active generation, or a table in a form doctor does not read): what the
        // generations recorded.
        if (state?.Generations.MaxBy(g => g.Id) is { } newest)
        {
            return (newest.Steering, "state");
        }

        return (Steering.Tproxy, "default");
    }

    private static Finding SteeringFinding(Steering steering, string source, DoctorRequest request)
    {
        var why = source switch
        {
            "option" => "as given with --steering",
            "table" => $"what the table inet {request.Namespace!.TableName} does",
            "state" => $"what the newest generation of namespace '{request.Namespace}' recorded",
            _ => "assumed: the default; pass --steering redirect if the service sets Switchover:Steering=Redirect",
        };
        var what = steering == Steering.Tproxy
            ? "TPROXY in prerouting: the input hook sees the public port"
            : "NAT redirect: the input hook sees the private port";
        return new Finding("steering", steering == Steering.Tproxy ? "tproxy" : "redirect", Severity.Info, $"{what} ({why})");
    }

    private static IReadOnlyList<int> PortsOf(NamespaceState? state) =>
        state is null ? [] : [.. state.Generations.SelectMany(g => g.Ports).Select(p => p.PublicPort).Distinct().Order()];

    /// <summary>The namespace's private ports, or a sample of the range the kernel picks them from.</summary>
    private static (IReadOnlyList<int>, string) PrivatePorts(DoctorFacts facts)
    {
        var recorded = facts.Namespace?.State?.Generations.SelectMany(g => g.Ports).Select(p => p.PrivatePort).Distinct().Order().ToList() ?? [];
        if (recorded.Count > 0)
        {
            return (recorded, "the private port" + (recorded.Count > 1 ? "s " : " ") + string.Join(", ", recorded.Select(p => ":" + p.ToString(CultureInfo.InvariantCulture))));
        }

        var (low, high) = facts.LocalPortRange ?? (32768, 60999);
        var sample = new[] { low, low + ((high - low) / 2), high }.Distinct().ToList();
        return (sample, string.Create(CultureInfo.InvariantCulture, $"the kernel picks them from ip_local_port_range {low}-{high}; checked {string.Join(", ", sample)}"));
    }
}

/// <summary>The namespace's state and its own table: is it there, does it point at a live generation.</summary>
internal static class NamespaceCheck
{
    public static IEnumerable<Finding> Check(NamespaceFacts facts, Ruleset? ruleset, Table? table)
    {
        var name = facts.Name.Value;
        var tableName = $"inet {facts.Name.TableName}";
        if (facts.StateError is { } error)
        {
            yield return new Finding("namespace", name, Severity.Problem, error);
            yield break;
        }

        var state = facts.State;
        if (state is null || state.Generations.Count == 0)
        {
            if (table is not null)
            {
                yield return new Finding("namespace", name, Severity.Warning,
                    $"no generation is recorded under {facts.StateDirectory}, but the table {tableName} exists (left by a crash?)",
                    $"switchover cleanup --namespace {name}");
            }
            else
            {
                yield return new Finding("namespace", name, Severity.Info,
                    $"no generation is recorded under {facts.StateDirectory} and there is no table {tableName}: nothing runs in this namespace");
            }

            yield break;
        }

        bool Alive(GenerationRecord g) => facts.Alive.TryGetValue(g.Id, out var alive) && alive;
        var active = state.Active;
        var others = state.Generations.Where(g => g != active).ToList();
        var summary = others.Count == 0 ? "" : "; also " + string.Join(", ", others.Select(g =>
            $"generation {g.Id.ToString(CultureInfo.InvariantCulture)} (pid {g.Pid.ToString(CultureInfo.InvariantCulture)}, {g.State.ToString().ToLowerInvariant()}{(Alive(g) ? "" : ", gone")})"));
        if (active is null)
        {
            yield return new Finding("namespace", name, Severity.Info, $"no generation is active yet{summary}");
        }
        else
        {
            var ports = string.Join(", ", active.Ports.Select(p => $"{FirewallCheck.Tcp(p.PublicPort)} -> :{p.PrivatePort.ToString(CultureInfo.InvariantCulture)}"));
            var gen = $"generation {active.Id.ToString(CultureInfo.InvariantCulture)} (pid {active.Pid.ToString(CultureInfo.InvariantCulture)})";
            yield return Alive(active)
                ? new Finding("namespace", name, Severity.Ok, $"{gen} is active and running: {ports}{summary}")
                : new Finding("namespace", name, Severity.Problem,
                    $"{gen} is recorded as active, but its process is gone: {ports} lead nowhere{summary}",
                    $"start a new generation (it takes over), or stop the service and run 'switchover cleanup --namespace {name}'");
        }

        if (ruleset is null)
        {
            yield break;
        }

        if (table is null)
        {
            if (active is not null)
            {
                yield return new Finding("namespace-table", name, Severity.Problem,
                    $"the table {tableName} is missing: the public ports are not steered to generation {active.Id.ToString(CultureInfo.InvariantCulture)}",
                    "start a new generation (it writes the table), or restart the service");
            }

            yield break;
        }

        var rules = FirewallCheck.SteeringRules(table);
        if (active is null)
        {
            yield return new Finding("namespace-table", name, rules.Count == 0 ? Severity.Ok : Severity.Warning,
                rules.Count == 0 ? $"the table {tableName} exists and steers nothing yet"
                    : $"the table {tableName} steers {string.Join(", ", rules.Select(r => $"{FirewallCheck.Tcp(r.PublicPort)} -> :{r.PrivatePort}"))}, but no generation is active");
            yield break;
        }

        var wrong = new List<string>();
        foreach (var mapping in active.Ports)
        {
            var steered = rules.Where(r => r.PublicPort == mapping.PublicPort).ToList();
            if (!steered.Any(r => r.PrivatePort == mapping.PrivatePort))
            {
                wrong.Add(steered.Count == 0
                    ? $"{FirewallCheck.Tcp(mapping.PublicPort)} is not steered at all"
                    : $"{FirewallCheck.Tcp(mapping.PublicPort)} goes to :{string.Join(",", steered.Select(r => r.PrivatePort))}, not to :{mapping.PrivatePort}");
            }
        }

        var kind = rules.Count > 0 ? rules[0].Kind.ToString() : "no";
        yield return wrong.Count == 0
            ? new Finding("namespace-table", name, Severity.Ok,
                $"the table {tableName} steers {string.Join(", ", active.Ports.Select(p => $"{FirewallCheck.Tcp(p.PublicPort)} -> :{p.PrivatePort}"))} ({kind}) to the active generation {active.Id}")
            : new Finding("namespace-table", name, Severity.Problem,
                $"the table {tableName} does not point at the active generation {active.Id}: {string.Join("; ", wrong)}",
                "start a new generation (it rewrites the table)");
    }
}
