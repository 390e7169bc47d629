using System.Globalization;
using System.Text;

namespace Switchover.Cli.Doctor.Rules;

/// <summary>One table of an iptables-save dump: chain policies and each chain's rules as argument lists.</summary>
internal sealed class SavedTable(string name)
{
    public string Name { get; } = name;

    /// <summary>Chain name to policy ("ACCEPT", "DROP", or "-" for a user chain), in the order of the dump.</summary>
    public List<(string Chain, string Policy)> Chains { get; } = [];

    public Dictionary<string, List<IReadOnlyList<string>>> Rules { get; } = new(StringComparer.Ordinal);
}

/// <summary>
/// Reads the output of iptables-save (iptables-nft-save, iptables-legacy-save): the same rules iptables was given, as
/// argument lists. doctor uses it where nft shows iptables matches only by name (<c>xt match "conntrack"</c>), and for
/// iptables-legacy tables, which nft does not see at all.
/// </summary>
internal static class IptablesSaveReader
{
    // The hooks and priorities x_tables registers its built-in chains at (include/uapi/linux/netfilter_ipv4.h).
    private static readonly Dictionary<(string Table, string Chain), (string Type, string Hook, int Priority)> BuiltinChains = new()
    {
        [("raw", "PREROUTING")] = ("filter", "prerouting", -300),
        [("raw", "OUTPUT")] = ("filter", "output", -300),
        [("mangle", "PREROUTING")] = ("filter", "prerouting", -150),
        [("mangle", "INPUT")] = ("filter", "input", -150),
        [("mangle", "FORWARD")] = ("filter", "forward", -150),
        [("mangle", "OUTPUT")] = ("route", "output", -150),
        [("mangle", "POSTROUTING")] = ("filter", "postrouting", -150),
        [("nat", "PREROUTING")] = ("nat", "prerouting", -100),
        [("nat", "INPUT")] = ("nat", "input", 100),
        [("nat", "OUTPUT")] = ("nat", "output", -100),
        [("nat", "POSTROUTING")] = ("nat", "postrouting", 100),
        [("filter", "INPUT")] = ("filter", "input", 0),
        [("filter", "FORWARD")] = ("filter", "forward", 0),
        [("filter", "OUTPUT")] = ("filter", "output", 0),
        [("security", "INPUT")] = ("filter", "input", 50),
        [("security", "FORWARD")] = ("filter", "forward", 50),
        [("security", "OUTPUT")] = ("filter", "output", 50),
    };

    public static IReadOnlyList<SavedTable> Parse(string text)
    {
        var tables = new List<SavedTable>();
        SavedTable? current = null;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            if (line[0] == '*')
            {
                current = new SavedTable(line[1..].Trim());
                tables.Add(current);
            }
            else if (line == "COMMIT")
            {
                current = null;
            }
            else if (current is not null && line[0] == ':')
            {
                var parts = line[1..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                current.Chains.Add((parts[0], parts.Length > 1 ? parts[1] : "-"));
                current.Rules.TryAdd(parts[0], []);
            }
            else if (current is not null && line.StartsWith("-A ", StringComparison.Ordinal))
            {
                var tokens = Tokenize(line);
                if (!current.Rules.TryGetValue(tokens[1], out var list))
                {
                    current.Rules[tokens[1]] = list = [];
                }

                list.Add(tokens.Skip(2).ToList());
            }
        }

        return tables;
    }

    /// <summary>Tables of iptables-legacy, which nft does not list: built from the dump alone.</summary>
    public static IReadOnlyList<Table> ToTables(IReadOnlyList<SavedTable> saved, string family)
    {
        var result = new List<Table>();
        foreach (var s in saved)
        {
            var table = new Table(family, s.Name, RuleSource.IptablesLegacy);
            foreach (var (name, policy) in s.Chains)
            {
                BaseHook? hook = BuiltinChains.TryGetValue((s.Name, name), out var b) ? new BaseHook(b.Type, b.Hook, b.Priority, policy == "DROP") : null;
                table.Chains[name] = new Chain(table, name, hook);
            }

            foreach (var (name, rules) in s.Rules)
            {
                if (!table.Chains.TryGetValue(name, out var chain))
                {
                    table.Chains[name] = chain = new Chain(table, name, null);
                }

                chain.Rules.AddRange(rules.Select(r => IptablesRule.Convert(chain, null, r, s)));
            }

            result.Add(table);
        }

        return result;
    }

    /// <summary>
    /// Replaces the rules of iptables-nft tables that hold <c>xt</c> expressions with the same rules read from
    /// iptables-nft-save, chain by chain, when both list the same number of rules (they list them in the same order).
    /// Returns the chains that could not be matched up; their xt rules stay "not understood".
    /// </summary>
    public static IReadOnlyList<Chain> Augment(Ruleset ruleset, IReadOnlyList<SavedTable> saved, string family)
    {
        var unmatched = new List<Chain>();
        foreach (var table in ruleset.Tables.Where(t => t.Family == family && t.Source == RuleSource.Nftables && t.HasXtExpressions))
        {
            var save = saved.FirstOrDefault(s => s.Name == table.Name);
            foreach (var chain in table.Chains.Values.Where(c => c.Rules.Any(r => r.HasXt)))
            {
                // A vmap becomes several rules with one handle: group back into the rules nft listed.
                var groups = new List<List<Rule>>();
                foreach (var rule in chain.Rules)
                {
                    if (groups.Count > 0 && rule.Handle is not null && groups[^1][0].Handle == rule.Handle)
                    {
                        groups[^1].Add(rule);
                    }
                    else
                    {
                        groups.Add([rule]);
                    }
                }

                if (save is null || !save.Rules.TryGetValue(chain.Name, out var lines) || lines.Count != groups.Count)
                {
                    unmatched.Add(chain);
                    continue;
                }

                var rules = new List<Rule>();
                for (var i = 0; i < groups.Count; i++)
                {
                    rules.AddRange(groups[i][0].HasXt ? [IptablesRule.Convert(chain, groups[i][0].Handle, lines[i], save)] : groups[i]);
                }

                chain.Rules.Clear();
                chain.Rules.AddRange(rules);
            }
        }

        return unmatched;
    }

    /// <summary>Splits a line as iptables-save quotes it: "..." with \" and \\ inside.</summary>
    internal static List<string> Tokenize(string line)
    {
        var tokens = new List<string>();
        var sb = new StringBuilder();
        var inQuotes = false;
        var any = false;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (inQuotes)
            {
                if (c == '\\' && i + 1 < line.Length && line[i + 1] is '"' or '\\')
                {
                    sb.Append(line[++i]);
                }
                else if (c == '"')
                {
                    inQuotes = false;
                }
                else
                {
                    sb.Append(c);
                }
            }
            else if (c == '"')
            {
                inQuotes = true;
                any = true;
            }
            else if (c == ' ')
            {
                if (sb.Length > 0 || any)
                {
                    tokens.Add(sb.ToString());
                    sb.Clear();
                    any = false;
                }
            }
            else
            {
                sb.Append(c);
            }
        }

        if (sb.Length > 0 || any)
        {
            tokens.Add(sb.ToString());
        }

        return tokens;
    }
}

/// <summary>One iptables rule (its arguments after "-A CHAIN") as conditions and an action.</summary>
internal static class IptablesRule
{
    public static Rule Convert(Chain chain, long? handle, IReadOnlyList<string> args, SavedTable table)
    {
        var conditions = new List<Condition>();
        var action = RuleAction.Continue;
        string? module = null;
        var negate = false;
        for (var i = 0; i < args.Count; i++)
        {
            var option = args[i];
            if (option == "!")
            {
                negate = true;
                continue;
            }

            var values = new List<string>();
            while (i + 1 < args.Count && args[i + 1] != "!" && !IsOption(args[i + 1]))
            {
                values.Add(args[++i]);
            }

            var value = values.Count > 0 ? values[0] : "";
            switch (option)
            {
                case "-p" or "--protocol":
                    conditions.Add(new ProtocolCondition(new HashSet<string>([value.ToLowerInvariant()], StringComparer.Ordinal), negate));
                    break;
                case "-s" or "--source":
                    conditions.Add(FixedCondition.DependsOn("the client's address"));
                    break;
                case "-d" or "--destination":
                    conditions.Add(FixedCondition.DependsOn("the local address the client connects to"));
                    break;
                case "-i" or "--in-interface":
                    conditions.Add(new InterfaceCondition(true, [value], negate));
                    break;
                case "-o" or "--out-interface":
                    conditions.Add(new InterfaceCondition(false, [value], negate));
                    break;
                case "-m" or "--match":
                    module = value;
                    break;
                case "-j" or "--jump":
                    action = table.Rules.ContainsKey(value) && !IptablesTargets.IsTarget(value)
                        ? new RuleAction(VerdictKind.Jump, value)
                        : IptablesTargets.Action(value, args.Skip(i + 1).ToList());
                    i = args.Count;
                    break;
                case "-g" or "--goto":
                    action = new RuleAction(VerdictKind.Goto, value);
                    i = args.Count;
                    break;
                default:
                    conditions.Add(ModuleOption(module, option, values, negate));
                    break;
            }

            negate = false;
        }

        return new Rule(chain, handle, string.Join(' ', args.Select(Quote)), conditions, action);
    }

    private static bool IsOption(string token) => token.Length > 1 && token[0] == '-' && !char.IsDigit(token[1]);

    private static Condition ModuleOption(string? module, string option, List<string> values, bool negate)
    {
        var value = values.Count > 0 ? values[0] : "";
        switch (module, option)
        {
            case ("udp" or "udplite" or "sctp" or "dccp" or "icmp" or "icmp6" or "icmpv6", _):
                return FixedCondition.OtherProtocol(module);
            case ("rt" or "frag" or "hbh" or "dst" or "mh" or "ah" or "esp" or "ipv6header", _):
                // IPv6 extension headers (and IPsec): a plain TCP packet has none, and these matches need one.
                return FixedCondition.OtherProtocol($"the '{module}' header");
            case ("tcp" or null, "--dport" or "--destination-port"):
            case ("multiport", "--dports" or "--destination-ports"):
                return Ports(value) is { } dports ? new PortCondition(PortField.Destination, dports, negate) : NotUnderstood(module, option, value);
            case ("tcp" or null, "--sport" or "--source-port"):
            case ("multiport", "--sports" or "--source-ports"):
                return FixedCondition.DependsOn("the client's port");
            case ("multiport", "--ports"):
                // Either port: ours is in the list, or it depends on the client's port.
                return Ports(value) is { } ports ? new EitherPortCondition(ports, negate) : NotUnderstood(module, option, value);
            case ("conntrack", "--ctstate"):
            case ("state", "--state"):
                return new ConntrackStateCondition(Lower(value), negate);
            case ("conntrack", "--ctstatus"):
                return new ConntrackStatusCondition(Lower(value), negate);
            case ("conntrack", "--ctorigsrc" or "--ctreplsrc" or "--ctorigsrcport"):
                return FixedCondition.DependsOn("the client's address");
            case ("addrtype", "--dst-type"):
                return new DestinationTypeCondition(Lower(value), negate);
            case ("addrtype", "--src-type"):
                return FixedCondition.DependsOn("the type of the client's address");
            case ("addrtype", "--limit-iface-in" or "--limit-iface-out"):
                return FixedCondition.DependsOn("whether the address belongs to the input interface");
            case ("comment", "--comment"):
                return new FixedCondition(Truth.True, "a comment");
            case ("limit" or "hashlimit" or "recent" or "connlimit" or "statistic" or "time" or "connbytes", _):
                return FixedCondition.DependsOn($"the '{module}' match (a rate or count)");
            case ("pkttype", "--pkt-type"):
                return new PacketTypeCondition(Lower(value), negate);
            case ("set" or "iprange" or "geoip" or "rpfilter" or "devgroup", _):
                return FixedCondition.DependsOn($"the '{module}' match (the client's address)");
            default:
                return NotUnderstood(module, option, value);
        }
    }

    private static FixedCondition NotUnderstood(string? module, string option, string value) =>
        FixedCondition.NotUnderstood(module is null ? $"iptables {option} {value}".TrimEnd() : $"iptables -m {module} {option} {value}".TrimEnd());

    private static HashSet<string> Lower(string list) =>
        new(list.Split(',').Select(s => s.ToLowerInvariant()), StringComparer.Ordinal);

    /// <summary>"22", "8000:8100", "22,80,8000:8100".</summary>
    internal static PortSet? Ports(string list)
    {
        var ranges = new List<(int, int)>();
        foreach (var part in list.Split(','))
        {
            var bounds = part.Split(':');
            if (bounds.Length is < 1 or > 2 || !int.TryParse(bounds[0].Length == 0 ? "0" : bounds[0], NumberStyles.None, CultureInfo.InvariantCulture, out var low))
            {
                return null;
            }

            var high = low;
            if (bounds.Length == 2 && !int.TryParse(bounds[1].Length == 0 ? "65535" : bounds[1], NumberStyles.None, CultureInfo.InvariantCulture, out high))
            {
                return null;
            }

            ranges.Add((low, high));
        }

        return new PortSet(ranges);
    }

    private static string Quote(string token) =>
        token.Length > 0 && !token.Any(c => c is ' ' or '"' or '\\') ? token : "\"" + token.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}

/// <summary>multiport --ports: the source or the destination port is in the list.</summary>
internal sealed record EitherPortCondition(PortSet Ports, bool Negated) : Condition
{
    public override Truth Evaluate(EvaluationContext context) =>
        Ports.Contains(context.Probe.Port) ? Negate(Truth.True, Negated) : Truth.Depends;
}

/// <summary>What an iptables target does, by its name (nft's JSON names xt targets without their options).</summary>
internal static class IptablesTargets
{
    private static readonly HashSet<string> NonTerminal = new(StringComparer.Ordinal)
    {
        "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CONNSECMARK", "SECMARK", "TCPMSS", "TOS", "DSCP", "TTL", "HL", "CLASSIFY",
        "CHECKSUM", "SET", "AUDIT", "TEE", "IDLETIMER", "LED", "TRACE", "ECN", "HMARK", "RATEEST", "TCPOPTSTRIP",
    };

    public static bool IsTarget(string name) =>
        NonTerminal.Contains(name) || name is "ACCEPT" or "DROP" or "RETURN" or "REJECT" or "QUEUE" or "NFQUEUE" or "DNAT" or "REDIRECT"
            or "TPROXY" or "SNAT" or "MASQUERADE" or "NETMAP" or "CT" or "NOTRACK" or "SYNPROXY";

    public static RuleAction Action(string name, IReadOnlyList<string> options)
    {
        string? Option(string key)
        {
            for (var i = 0; i + 1 < options.Count; i++)
            {
                if (options[i] == key)
                {
                    return options[i + 1];
                }
            }

            return null;
        }

        var text = options.Count == 0 ? name : name + " " + string.Join(' ', options);
        return name switch
        {
            "ACCEPT" => new RuleAction(VerdictKind.Accept),
            "DROP" or "REJECT" => new RuleAction(VerdictKind.Drop),
            "RETURN" => new RuleAction(VerdictKind.Return),
            "QUEUE" or "NFQUEUE" => new RuleAction(VerdictKind.Unknown, Effect: new Effect(EffectKind.Queue, null, text)),
            "DNAT" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Dnat, PortAfterColon(Option("--to-destination")), text)),
            "REDIRECT" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Redirect, FirstPort(Option("--to-ports")), text)),
            "TPROXY" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Tproxy, FirstPort(Option("--on-port")), text)),
            "SNAT" or "MASQUERADE" or "NETMAP" => new RuleAction(VerdictKind.Accept),
            "NOTRACK" => new RuleAction(VerdictKind.Continue, Effect: new Effect(EffectKind.Notrack, null, text)),
            "CT" when options.Contains("--notrack") => new RuleAction(VerdictKind.Continue, Effect: new Effect(EffectKind.Notrack, null, text)),
            "CT" => RuleAction.Continue,
            _ when NonTerminal.Contains(name) => RuleAction.Continue,
            _ => new RuleAction(VerdictKind.Unknown),
        };
    }

    private static int? PortAfterColon(string? destination)
    {
        if (destination is null)
        {
            return null;
        }

        // 172.17.0.2:80, [2001:db8::2]:80; an IPv6 address alone has colons but no port.
        var colon = destination.LastIndexOf(':');
        var isPort = colon >= 0 && (destination.Count(c => c == ':') == 1 || destination[colon - 1] == ']');
        return isPort ? FirstPort(destination[(colon + 1)..]) : null;
    }

    private static int? FirstPort(string? ports) =>
        ports is not null && int.TryParse(ports.Split('-', ':')[0], NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p : null;
}
