using System.Globalization;
using Switchover.Cli.Doctor.Rules;

namespace Switchover.Cli.Doctor;

/// <summary>What the firewall checks need besides the ruleset.</summary>
/// <param name="PrivatePorts">The private ports to check for the Redirect steering: the namespace's, or a sample of ip_local_port_range.</param>
/// <param name="PrivatePortsSource">How to name them in messages ("the private port :40635", "ports from ip_local_port_range 32768-60999").</param>
internal sealed record FirewallContext(
    IReadOnlyList<int> Ports,
    Steering Steering,
    NamespaceName? Namespace,
    bool Ipv6,
    IReadOnlyList<int> PrivatePorts,
    string PrivatePortsSource);

/// <summary>The checks that read the ruleset: which firewall, its input policy, the port, captures, Docker.</summary>
internal static class FirewallCheck
{
    internal const string Ours = "switchover";

    public static IEnumerable<Finding> Check(Ruleset ruleset, FirewallContext context)
    {
        var findings = new List<Finding>();
        findings.AddRange(Firewalls(ruleset));
        foreach (var port in context.Ports)
        {
            findings.AddRange(Port(ruleset, context, port));
        }

        findings.AddRange(PrivatePorts(ruleset, context));
        findings.AddRange(Loopback(ruleset, context));
        foreach (var port in context.Ports)
        {
            findings.AddRange(Captures(ruleset, context, port));
            findings.AddRange(PreroutingDrops(ruleset, context, port));
            findings.AddRange(OtherNamespaces(ruleset, context, port));
        }

        findings.AddRange(DockerPriority(ruleset, context));
        return findings;
    }

    /// <summary>What made a table: recognised by its table and chain names.</summary>
    internal static IReadOnlyList<string> Kinds(Table table)
    {
        if (table.Family == "inet" && table.Name.StartsWith("switchover_", StringComparison.Ordinal))
        {
            return [Ours];
        }

        var chains = table.Chains.Keys.ToList();
        var kinds = new List<string>();
        if (chains.Any(c => c.StartsWith("ufw-", StringComparison.Ordinal) || c.StartsWith("ufw6-", StringComparison.Ordinal)))
        {
            kinds.Add("ufw");
        }

        if ((table.Family == "inet" && table.Name == "firewalld") || chains.Any(c => c is "INPUT_ZONES" or "INPUT_direct"))
        {
            kinds.Add("firewalld");
        }

        // Docker 28 also writes a raw table with no chain of its own, only rules on its bridge.
        if (chains.Any(c => c is "DOCKER" or "DOCKER-USER" || c.StartsWith("DOCKER-", StringComparison.Ordinal))
            || table.Chains.Values.SelectMany(c => c.Rules).SelectMany(r => r.Conditions).OfType<InterfaceCondition>().Any(i => i.Names.Contains("docker0")))
        {
            kinds.Add("docker");
        }

        if (chains.Any(c => c.StartsWith("KUBE-", StringComparison.Ordinal)))
        {
            kinds.Add("kube-proxy");
        }

        if (table.Name.StartsWith("f2b-", StringComparison.Ordinal) || chains.Any(c => c.StartsWith("f2b-", StringComparison.Ordinal)))
        {
            kinds.Add("fail2ban");
        }

        // Docker and kube-proxy do not filter input: an input chain that drops next to their chains is the host's own.
        var ownInput = table.Chains.Values.Any(c => c.Hook?.Hook == "input" && RuleEvaluator.Filters(c));
        if (kinds.Count == 0 || (ownInput && !kinds.Contains("ufw") && !kinds.Contains("firewalld") && !kinds.Contains("fail2ban")))
        {
            kinds.Add(table.Source == RuleSource.IptablesLegacy ? "iptables-legacy"
                : IsIptablesNft(table) ? "iptables"
                : "nftables");
        }

        return kinds;
    }

    /// <summary>The firewall whose commands fix a drop in this table.</summary>
    internal static string Owner(Table table)
    {
        var kinds = Kinds(table);
        foreach (var k in new[] { "ufw", "firewalld", "iptables-legacy", "iptables", "nftables" })
        {
            if (kinds.Contains(k))
            {
                return k;
            }
        }

        return table.Source == RuleSource.IptablesLegacy ? "iptables-legacy" : IsIptablesNft(table) ? "iptables" : "nftables";
    }

    private static bool IsIptablesNft(Table table) =>
        table.Family is "ip" or "ip6" && table.Name is "filter" or "nat" or "mangle" or "raw" or "security"
        && (table.HasXtExpressions || table.Chains.Keys.Any(c => c is "INPUT" or "OUTPUT" or "FORWARD" or "PREROUTING" or "POSTROUTING"));

    private static bool IsOurs(Table table) => Kinds(table).Contains(Ours);

    private static IEnumerable<Finding> Firewalls(Ruleset ruleset)
    {
        var foreign = ruleset.Tables.Where(t => !IsOurs(t)).ToList();
        if (foreign.Count == 0)
        {
            yield return new Finding("firewall", null, Severity.Ok, "none: the ruleset has no table besides switchover's own");
            yield break;
        }

        var byKind = foreign.SelectMany(t => Kinds(t).Select(k => (Kind: k, Table: t))).GroupBy(x => x.Kind);
        foreach (var group in byKind.OrderBy(g => Order(g.Key)))
        {
            var tables = group.Select(x => x.Table).ToList();
            var via = group.Key switch
            {
                "iptables" => "iptables-nft ",
                "ufw" or "firewalld" or "docker" or "kube-proxy" or "fail2ban" => Backend(tables),
                _ => "",
            };
            var text = $"{via}table{(tables.Count > 1 ? "s" : "")} {string.Join(", ", tables.Select(t => t.Display))}";
            if (group.Key is "docker" or "kube-proxy")
            {
                var chains = tables.SelectMany(t => t.Chains.Values)
                    .Where(c => c.Name.StartsWith(group.Key == "docker" ? "DOCKER" : "KUBE-", StringComparison.Ordinal))
                    .Select(c => c.Name).Distinct().Take(4);
                text += $" (chains {string.Join(", ", chains)})";
            }
            else
            {
                var input = tables.SelectMany(t => t.Chains.Values).Where(c => c.Hook?.Hook == "input").ToList();
                text += input.Count == 0 ? "; no input chain" : "; input: " + string.Join(", ", input.Select(DescribeInput));
            }

            yield return new Finding("firewall", group.Key, Severity.Info, text);
        }
    }

    private static int Order(string kind) => Array.IndexOf(["ufw", "firewalld", "nftables", "iptables", "iptables-legacy", "docker", "kube-proxy", "fail2ban"], kind) is var i && i >= 0 ? i : 99;

    private static string Backend(List<Table> tables) =>
        tables.All(t => t.Source == RuleSource.IptablesLegacy) ? "iptables-legacy "
        : tables.All(IsIptablesNft) ? "iptables-nft "
        : "";

    /// <summary>"ip filter INPUT policy drop", "inet firewalld filter_INPUT policy accept, ends in a catch-all reject".</summary>
    internal static string DescribeInput(Chain chain)
    {
        var hook = chain.Hook!;
        var text = $"{chain.Display} policy {(hook.PolicyDrop ? "drop" : "accept")}";
        if (!hook.PolicyDrop && chain.Rules.LastOrDefault() is { Conditions.Count: 0, Action.Verdict: VerdictKind.Drop } last)
        {
            text += $", ends in a catch-all \"{last.Text}\"";
        }

        return text;
    }

    private static IEnumerable<ProbeFamily> Families(FirewallContext context) =>
        context.Ipv6 ? [ProbeFamily.V4, ProbeFamily.V6] : [ProbeFamily.V4];

    /// <summary>A new connection and a later packet of it: both must pass. Returns the one that fares worse.</summary>
    private static HookResult Through(Ruleset ruleset, string hook, Probe probe, Func<Table, bool>? include = null)
    {
        var first = RuleEvaluator.Evaluate(ruleset, hook, probe, include);
        var later = RuleEvaluator.Evaluate(ruleset, hook, probe with { Established = true }, include);
        return Worse(later.Verdict) > Worse(first.Verdict) ? later : first;
    }

    private static int Worse(Verdict v) => v switch { Verdict.Dropped => 3, Verdict.NotUnderstood => 2, Verdict.Depends => 1, _ => 0 };

    private static IEnumerable<Finding> Port(Ruleset ruleset, FirewallContext context, int port)
    {
        var subject = Tcp(port);
        var results = Families(context).Select(f => (Family: f, Result: Through(ruleset, "input", new Probe(f, port, ProbeOrigin.Network)))).ToList();
        var filtering = ruleset.BaseChains("input").Any(RuleEvaluator.Filters);
        if (results.All(r => r.Result.Verdict == Verdict.Accepted))
        {
            var accepts = results.SelectMany(r => r.Result.DecidingAccepts).DistinctBy(o => o.Rule).ToList();
            var how = !filtering ? "no input chain drops anything"
                : accepts.Count == 0 ? "no input chain drops it"
                : "accepted by " + string.Join("; ", accepts.Take(3).Select(o => o.Display));
            yield return new Finding("port", subject, Severity.Ok, $"allowed from the network for {FamilyList(results.Select(r => r.Family))}: {how}");
            yield break;
        }

        var parts = new List<string>();
        string? advice = null;
        var severity = Severity.Warning;
        foreach (var group in results.GroupBy(r => Describe(r.Result, port)))
        {
            parts.Add($"{FamilyList(group.Select(g => g.Family))}: {group.Key}");
        }

        foreach (var (family, result) in results.Where(r => r.Result.Verdict == Verdict.Dropped))
        {
            severity = Severity.Problem;
            var drop = result.DroppedBy!;
            advice ??= AllowAdvice(drop.Chain, family, port, results.Count(r => r.Result.Verdict == Verdict.Dropped) > 1);
        }

        if (severity == Severity.Warning)
        {
            advice = results.Any(r => r.Result.Verdict == Verdict.NotUnderstood)
                ? "check those rules by hand (nft list ruleset, iptables-save), or try a client from the network"
                : "make sure the clients that need the service are among those allowed";
        }

        yield return new Finding("port", subject, severity, $"from the network, {string.Join("; ", parts)}", advice);
    }

    /// <summary>One family's verdict in words.</summary>
    private static string Describe(HookResult result, int port)
    {
        switch (result.Verdict)
        {
            case Verdict.Accepted:
                var accepts = result.DecidingAccepts;
                return accepts.Count == 0 ? "allowed" : "allowed by " + string.Join("; ", accepts.Take(2).Select(o => o.Display));
            case Verdict.Dropped:
                var drop = result.DroppedBy!;
                var decisive = drop.Outcomes.OrderBy(o => o.Certainty == Truth.True ? 0 : 1).First();
                var packets = result.Probe.Established ? "packets after the first of a connection are " : "";
                return $"{packets}dropped by {decisive.Display}";
            case Verdict.Depends:
                var allowedBy = result.DecidingAccepts.Take(2).Select(o => o.Display).ToList();
                var droppedBy = result.PossibleDrops.Take(2).Select(o => o.Display).ToList();
                var on = result.ClientDependentRules.Take(2).Select(Because).ToList();
                return $"allowed for some clients only ({(allowedBy.Count > 0 ? "accepted by " + string.Join("; ", allowedBy) : "accepted")}"
                    + $"{(droppedBy.Count > 0 ? ", dropped by " + string.Join("; ", droppedBy) : "")}"
                    + $"{(on.Count > 0 ? ", depending on " + string.Join("; ", on) : "")})";
            default:
                var rules = result.NotUnderstoodRules.Take(3).Select(r => $"{r.Display} ({NotUnderstoodWhat(r)})").ToList();
                return $"not understood: cannot tell whether tcp/{port.ToString(CultureInfo.InvariantCulture)} is allowed; it depends on "
                    + (rules.Count > 0 ? string.Join("; ", rules) : "a verdict doctor cannot predict");
        }
    }

    private static string Because(Rule rule)
    {
        var what = rule.Conditions.OfType<FixedCondition>().Where(c => c.Truth == Truth.Depends).Select(c => c.What).FirstOrDefault()
            ?? (rule.Conditions.Any(c => c is InterfaceCondition) ? "the input interface" : "the client");
        return $"{what} ({rule.Display})";
    }

    private static string NotUnderstoodWhat(Rule rule) =>
        rule.Conditions.OfType<FixedCondition>().Where(c => c.Truth == Truth.Unknown).Select(c => c.What).FirstOrDefault()
        ?? (rule.Action.Verdict == VerdictKind.Unknown ? "a verdict doctor cannot predict" : "an expression doctor does not model");

    private static string AllowAdvice(Chain chain, ProbeFamily family, int port, bool bothFamilies)
    {
        var p = port.ToString(CultureInfo.InvariantCulture);
        var baseChain = chain.Hook is not null ? chain : chain.Table.Chains.Values.FirstOrDefault(c => c.Hook?.Hook == "input") ?? chain;
        return Owner(chain.Table) switch
        {
            "ufw" => $"allow it: ufw allow {p}/tcp",
            "firewalld" => $"allow it: firewall-cmd --permanent --add-port={p}/tcp && firewall-cmd --reload",
            "iptables-legacy" => $"allow it: {(family == ProbeFamily.V6 ? "ip6tables-legacy" : "iptables-legacy")} -I {baseChain.Name} -p tcp --dport {p} -j ACCEPT"
                + (bothFamilies ? $" (and {(family == ProbeFamily.V6 ? "iptables-legacy" : "ip6tables-legacy")} the same)" : ""),
            "iptables" => $"allow it: {(family == ProbeFamily.V6 ? "ip6tables" : "iptables")} -I {baseChain.Name} -p tcp --dport {p} -j ACCEPT"
                + (bothFamilies ? $" (and {(family == ProbeFamily.V6 ? "iptables" : "ip6tables")} the same)" : "") + ", and persist it as the host does",
            _ => $"allow it: nft insert rule {chain.Table.Family} {chain.Table.Name} {baseChain.Name} tcp dport {p} accept (and add it to the file the ruleset is loaded from, e.g. /etc/nftables.conf)",
        };
    }

    /// <summary>With Redirect, the input hook sees the private port: it must be allowed too.</summary>
    private static IEnumerable<Finding> PrivatePorts(Ruleset ruleset, FirewallContext context)
    {
        if (context.PrivatePorts.Count == 0 || !ruleset.BaseChains("input").Any(RuleEvaluator.Filters))
        {
            yield break;
        }

        var results = (from port in context.PrivatePorts
                       from family in Families(context)
                       select (Port: port, Family: family, Result: Through(ruleset, "input", new Probe(family, port, ProbeOrigin.Network, Dnat: true)))).ToList();
        var dropped = results.Where(r => r.Result.Verdict == Verdict.Dropped).ToList();
        var subject = string.Join(",", context.Ports.Select(Tcp));
        if (context.Steering == Steering.Redirect)
        {
            if (dropped.Count > 0)
            {
                var d = dropped[0];
                yield return new Finding("private-ports", subject.Length > 0 ? subject : null, Severity.Problem,
                    $"with the Redirect steering the input hook sees the private port, not the public one: {Describe(d.Result, d.Port)} "
                    + $"({context.PrivatePortsSource}, {d.Family switch { ProbeFamily.V4 => "IPv4", _ => "IPv6" }}): network clients time out",
                    "use Steering=Tproxy (the default; the input hook sees the public port), or allow the private ports as well");
            }
            else if (results.All(r => r.Result.Verdict == Verdict.Accepted))
            {
                var by = results.SelectMany(r => r.Result.DecidingAccepts).DistinctBy(o => o.Rule).Take(2).Select(o => o.Display).ToList();
                yield return new Finding("private-ports", subject.Length > 0 ? subject : null, Severity.Ok,
                    $"with the Redirect steering the input hook sees the private ports; they are accepted ({context.PrivatePortsSource})"
                    + (by.Count > 0 ? ": " + string.Join("; ", by) : ""));
            }
            else
            {
                var r = results.First(x => x.Result.Verdict != Verdict.Accepted);
                yield return new Finding("private-ports", subject.Length > 0 ? subject : null, Severity.Warning,
                    $"with the Redirect steering the input hook sees the private ports ({context.PrivatePortsSource}): {Describe(r.Result, r.Port)}",
                    "use Steering=Tproxy (the default), which does not need them allowed");
            }
        }
        else if (dropped.Count > 0)
        {
            var d = dropped[0];
            yield return new Finding("private-ports", subject.Length > 0 ? subject : null, Severity.Info,
                $"with the Redirect steering the private ports would have to be allowed too ({context.PrivatePortsSource}): {Describe(d.Result, d.Port)}; "
                + "the Tproxy steering does not need them");
        }
    }

    /// <summary>
    /// Clients on this host, and each generation's readiness request to its own private port, come in on lo: an input
    /// chain that drops without accepting lo first stops them (network clients may still pass).
    /// </summary>
    private static IEnumerable<Finding> Loopback(Ruleset ruleset, FirewallContext context)
    {
        if (!ruleset.BaseChains("input").Any(RuleEvaluator.Filters))
        {
            yield break;
        }

        var checks = context.Ports.Select(p => (Port: p, What: $"local clients of {Tcp(p)}"))
            .Concat(context.PrivatePorts.Take(1).Select(p => (Port: p, What: $"the readiness request of a new generation to its own private port (e.g. :{p.ToString(CultureInfo.InvariantCulture)})")));
        foreach (var (port, what) in checks)
        {
            var results = Families(context).Select(f => (Family: f, Result: Through(ruleset, "input", new Probe(f, port, ProbeOrigin.Loopback)))).ToList();
            var failed = results.Where(r => r.Result.Verdict != Verdict.Accepted).ToList();
            if (failed.Count == 0)
            {
                continue;
            }

            var dropped = failed.Any(r => r.Result.Verdict == Verdict.Dropped);
            yield return new Finding("loopback", Tcp(port), dropped ? Severity.Problem : Severity.Warning,
                $"{what} come in on lo: {string.Join("; ", failed.Select(r => $"{FamilyList([r.Family])}: {Describe(r.Result, port)}"))}",
                "accept lo before anything drops (nft: iif \"lo\" accept; iptables: -A INPUT -i lo -j ACCEPT)");
        }
    }

    /// <summary>Foreign NAT, tproxy, queue and notrack rules on the port, for network and local clients.</summary>
    private static IEnumerable<Finding> Captures(Ruleset ruleset, FirewallContext context, int port)
    {
        var subject = Tcp(port);
        var hits = new List<(EffectHit Hit, string Path)>();
        foreach (var family in Families(context))
        {
            var name = family == ProbeFamily.V4 ? "IPv4" : "IPv6";
            foreach (var (hook, origin, path) in new[]
            {
                ("prerouting", ProbeOrigin.Network, $"network {name}"),
                ("prerouting", ProbeOrigin.Loopback, $"local {name}"),
                ("output", ProbeOrigin.Loopback, $"local {name}"),
            })
            {
                var result = RuleEvaluator.Evaluate(ruleset, hook, new Probe(family, port, origin), t => !IsOurs(t));
                hits.AddRange(result.Effects.Select(h => (h, path)));
            }
        }

        foreach (var group in hits.GroupBy(h => h.Hit.Rule))
        {
            var rule = group.Key;
            var effect = group.First().Hit.Effect;
            var certainty = group.Select(g => g.Hit.Certainty).Aggregate(Truth.Unknown, (a, b) => Rank(b) < Rank(a) ? b : a);

            // Each path once, with what it depends on when that is not certain.
            var paths = string.Join(", ", group.GroupBy(g => g.Path).Select(p =>
            {
                var best = p.MinBy(g => Rank(g.Hit.Certainty));
                return best.Hit.Certainty switch
                {
                    Truth.True => p.Key,
                    Truth.Depends => $"{p.Key} for some clients, depending on {string.Join("; ", best.Hit.Uncertain.Where(u => u.Truth == Truth.Depends).Select(u => Because(u.Rule)).Distinct().Take(1))}",
                    _ => $"{p.Key} if {string.Join("; ", best.Hit.Uncertain.Where(u => u.Truth == Truth.Unknown).Select(u => $"{u.Rule.Display} matches ({NotUnderstoodWhat(u.Rule)})").Distinct().Take(2))}",
                };
            }));
            var condition = "";
            var docker = Kinds(rule.Chain.Table).Contains("docker");
            switch (effect.Kind)
            {
                case EffectKind.Notrack:
                    var notrackSeverity = context.Steering == Steering.Redirect ? Severity.Problem : Severity.Warning;
                    yield return new Finding("notrack", subject, certainty == Truth.Unknown ? Severity.Warning : notrackSeverity,
                        $"not tracked by conntrack ({rule.Display}; {paths}{condition}): "
                        + (context.Steering == Steering.Redirect ? "the Redirect steering cannot translate untracked flows" : "the drain cannot see these connections"),
                        "remove the notrack rule for this port");
                    break;
                case EffectKind.Queue:
                    yield return new Finding("capture", subject, Severity.Warning,
                        $"queued to a userspace program by {rule.Display} ({paths}{condition}): it decides what happens to the connections",
                        "make sure that program accepts the port");
                    break;
                default:
                    var verb = certainty == Truth.Unknown ? "may be captured" : "captured";
                    yield return new Finding("capture", subject, certainty == Truth.Unknown ? Severity.Warning : Severity.Problem,
                        $"{verb} by {(docker ? "Docker's " : "")}{rule.Display}: {effect.Text} ({paths}{condition}); "
                        + "such connections never reach the service",
                        docker ? "a container publishes this port: publish it on another host port, or give the service another port"
                            : "remove that rule, or give the service a port nothing else redirects");
                    break;
            }
        }
    }

    private static int Rank(Truth t) => t switch { Truth.True => 0, Truth.Depends => 1, _ => 2 };

    private static IEnumerable<Finding> PreroutingDrops(Ruleset ruleset, FirewallContext context, int port)
    {
        var subject = Tcp(port);
        foreach (var family in Families(context))
        {
            foreach (var origin in new[] { ProbeOrigin.Network, ProbeOrigin.Loopback })
            {
                var result = Through(ruleset, "prerouting", new Probe(family, port, origin), t => !IsOurs(t));
                var verdict = result.Verdict;
                var who = $"{(origin == ProbeOrigin.Network ? "network" : "local")} {(family == ProbeFamily.V4 ? "IPv4" : "IPv6")} clients";
                if (verdict == Verdict.Dropped)
                {
                    yield return new Finding("prerouting-drop", subject, Severity.Problem,
                        $"dropped in prerouting for {who}, before any input chain: {Describe(result, port)}",
                        "remove or narrow that rule");
                }
                else if (verdict == Verdict.NotUnderstood)
                {
                    yield return new Finding("prerouting-drop", subject, Severity.Warning,
                        $"in prerouting for {who}: {Describe(result, port)}", "check those rules by hand");
                }
            }
        }
    }

    /// <summary>Another switchover namespace steering the same port.</summary>
    private static IEnumerable<Finding> OtherNamespaces(Ruleset ruleset, FirewallContext context, int port)
    {
        foreach (var table in ruleset.Tables.Where(IsOurs))
        {
            var name = table.Name["switchover_".Length..];
            if (context.Namespace is { } ns && ns.Value == name)
            {
                continue;
            }

            var steering = SteeringRules(table).Where(s => s.PublicPort == port).ToList();
            if (steering.Count == 0)
            {
                continue;
            }

            var s = steering[0];
            if (context.Namespace is null)
            {
                yield return new Finding("namespace", name, Severity.Info,
                    $"namespace '{name}' steers {Tcp(port)} to :{s.PrivatePort} ({s.Kind}, table {table.Display})");
            }
            else
            {
                yield return new Finding("namespace", name, Severity.Problem,
                    $"{Tcp(port)} is already steered by namespace '{name}' (table {table.Display}, to :{s.PrivatePort}): two namespaces cannot share a public port",
                    $"give one of them another port, or stop it and run 'switchover cleanup --namespace {name}'");
            }
        }
    }

    /// <summary>The public-to-private mappings a switchover table holds (its tproxy or redirect rules).</summary>
    internal static IReadOnlyList<(int PublicPort, int PrivatePort, Steering Kind)> SteeringRules(Table table)
    {
        var result = new List<(int, int, Steering)>();
        foreach (var rule in table.Chains.Values.SelectMany(c => c.Rules))
        {
            if (rule.Action.Effect is not { Kind: EffectKind.Tproxy or EffectKind.Redirect } effect)
            {
                continue;
            }

            var kind = effect.Kind == EffectKind.Tproxy ? Steering.Tproxy : Steering.Redirect;
            if (effect.PortMap is { } map)
            {
                result.AddRange(map.Select(m => (m.From, m.To, kind)));
            }
            else if (effect.TargetPort is { } target)
            {
                result.AddRange(rule.Conditions.OfType<PortCondition>().Where(p => p.Field == PortField.Destination && !p.Negated)
                    .SelectMany(p => p.Ports.SinglePorts).Select(p => (p, target, kind)));
            }
        }

        return [.. result.Distinct()];
    }

    private static IEnumerable<Finding> DockerPriority(Ruleset ruleset, FirewallContext context)
    {
        var docker = ruleset.Tables.Where(t => Kinds(t).Contains("docker")).ToList();
        if (docker.Count == 0)
        {
            yield break;
        }

        var nat = docker.SelectMany(t => t.Chains.Values)
            .Where(c => c.Hook is { Type: "nat", Hook: "prerouting" or "output" })
            .ToList();
        var tied = nat.Where(c => c.Hook!.Priority == -100).ToList();
        var list = string.Join(", ", nat.Select(c => $"{c.Display} (priority {c.Hook!.Priority.ToString(CultureInfo.InvariantCulture)})"));
        if (tied.Count > 0 && context.Steering == Steering.Redirect)
        {
            yield return new Finding("docker-nat-priority", null, Severity.Warning,
                $"Docker's nat chains {string.Join(", ", tied.Select(c => c.Display))} run at priority -100 (dstnat), the same as the Redirect steering's "
                + "chains: chains of equal priority run in the order they were registered, so whether Docker's DNAT or switchover's redirect "
                + "sees a new connection first depends on which was set up first",
                "use Steering=Tproxy (a filter chain at prerouting priority filter + 20: no NAT, so no tie), and do not publish the service's port with Docker");
        }
        else if (tied.Count > 0)
        {
            yield return new Finding("docker-nat-priority", null, Severity.Info,
                $"Docker's nat chains run at priority -100 ({list}); the Tproxy steering is a filter chain (priority filter + 20) and does no NAT: no tie. "
                + "With Steering=Redirect (-100) the two would tie, and registration order would decide");
        }
        else if (nat.Count > 0)
        {
            yield return new Finding("docker-nat-priority", null, Severity.Info, $"Docker's nat chains: {list}; no tie with switchover's chains");
        }
    }

    internal static string Tcp(int port) => "tcp/" + port.ToString(CultureInfo.InvariantCulture);

    private static string FamilyList(IEnumerable<ProbeFamily> families)
    {
        var names = families.Select(f => f == ProbeFamily.V4 ? "IPv4" : "IPv6").ToList();
        return string.Join(" and ", names);
    }
}
