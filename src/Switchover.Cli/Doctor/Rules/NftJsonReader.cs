using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Switchover.Cli.Doctor.Rules;

/// <summary>
/// Reads the document of <c>nft -j list ruleset</c> (JSON schema 1, nftables 0.9.x to 1.x) into tables, chains and
/// rules. Expressions it does not model become conditions that are "not understood", never "true": an unknown match
/// in front of an accept does not make a port allowed.
/// </summary>
internal static class NftJsonReader
{
    public static Ruleset Read(string json)
    {
        using var document = JsonDocument.Parse(json);
        if (!document.RootElement.TryGetProperty("nftables", out var items) || items.ValueKind != JsonValueKind.Array)
        {
            throw new FormatException("The document has no 'nftables' array: it is not the output of 'nft -j list ruleset'.");
        }

        var tables = new Dictionary<(string Family, string Name), Table>();
        var sets = new Dictionary<(string Family, string Table, string Name), JsonElement>();
        var rules = new List<JsonElement>();
        foreach (var item in items.EnumerateArray())
        {
            if (item.TryGetProperty("table", out var t))
            {
                var table = new Table(Str(t, "family"), Str(t, "name"), RuleSource.Nftables);
                tables[(table.Family, table.Name)] = table;
            }
            else if (item.TryGetProperty("chain", out var c))
            {
                var table = tables[(Str(c, "family"), Str(c, "table"))];
                BaseHook? hook = null;
                if (c.TryGetProperty("hook", out var h))
                {
                    hook = new BaseHook(
                        c.TryGetProperty("type", out var type) ? type.GetString()! : "filter",
                        h.GetString()!,
                        c.TryGetProperty("prio", out var prio) && prio.ValueKind == JsonValueKind.Number ? prio.GetInt32() : 0,
                        c.TryGetProperty("policy", out var policy) && policy.GetString() == "drop");
                }

                var name = Str(c, "name");
                table.Chains[name] = new Chain(table, name, hook);
            }
            else if (item.TryGetProperty("set", out var s) || item.TryGetProperty("map", out s))
            {
                sets[(Str(s, "family"), Str(s, "table"), Str(s, "name"))] = s.Clone();
            }
            else if (item.TryGetProperty("rule", out var r))
            {
                rules.Add(r.Clone());
            }
        }

        foreach (var r in rules)
        {
            var table = tables[(Str(r, "family"), Str(r, "table"))];
            var chain = table.Chains[Str(r, "chain")];
            var handle = r.TryGetProperty("handle", out var hd) ? hd.GetInt64() : (long?)null;
            var context = new RuleReader(table, sets);
            var read = context.ReadRule(chain, handle, r.GetProperty("expr")).ToList();
            chain.Rules.AddRange(read.Select(x => x with { HasXt = context.SawXt }));
            if (context.SawXt)
            {
                table.HasXtExpressions = true;
            }
        }

        return new Ruleset([.. tables.Values]);
    }

    private static string Str(JsonElement e, string name) => e.GetProperty(name).GetString()!;

    /// <summary>Turns one rule's expression list into conditions and an action.</summary>
    private sealed class RuleReader(Table table, Dictionary<(string, string, string), JsonElement> sets)
    {
        public bool SawXt { get; private set; }

        public IEnumerable<Rule> ReadRule(Chain chain, long? handle, JsonElement expressions)
        {
            var conditions = new List<Condition>();
            var text = new List<string>();
            foreach (var expression in expressions.EnumerateArray())
            {
                var (key, value) = Single(expression);
                switch (key)
                {
                    case "match":
                        conditions.Add(Match(value.GetProperty("left"), value.GetProperty("op").GetString()!, value.GetProperty("right")));
                        text.Add(NftText.Match(value));
                        continue;
                    case "vmap":
                        // One rule per map entry: the entry's key becomes a condition, its verdict the action. At most
                        // one entry matches a packet, so evaluating them in order is what the map does.
                        text.Add(NftText.Expression(expression));
                        return VmapRules(chain, handle, string.Join(' ', text), conditions, value);
                    case "counter" or "log" or "mangle" or "comment" or "ct helper" or "ct timeout" or "ct expectation"
                        or "set" or "map" or "meter" or "secmark" or "flow" or "last":
                        // Statements that change no verdict (counters, logging, marks, set updates).
                        continue;
                    case "limit" or "quota":
                        conditions.Add(FixedCondition.DependsOn(key == "limit" ? "a rate limit" : "a quota"));
                        text.Add(NftText.Expression(expression));
                        continue;
                    case "notrack":
                        text.Add("notrack");
                        return [new Rule(chain, handle, string.Join(' ', text), conditions, new RuleAction(VerdictKind.Continue,
                            Effect: new Effect(EffectKind.Notrack, null, "notrack")))];
                    case "xt":
                        SawXt = true;
                        var xtName = value.TryGetProperty("name", out var n) ? n.GetString() : "?";
                        var xtType = value.TryGetProperty("type", out var ty) ? ty.GetString() : "match";
                        text.Add($"xt {xtType} \"{xtName}\"");
                        if (xtType == "target")
                        {
                            return [new Rule(chain, handle, string.Join(' ', text), conditions, IptablesTargets.Action(xtName ?? "?", []))];
                        }

                        conditions.Add(FixedCondition.NotUnderstood($"the iptables match '{xtName}' (nft shows only its name)"));
                        continue;
                }

                text.Add(NftText.Expression(expression));
                var action = Statement(key, value);
                if (action is null)
                {
                    // A statement doctor does not know may filter: not understood, never ignored.
                    conditions.Add(FixedCondition.NotUnderstood($"the statement '{key}'"));
                    continue;
                }

                if (action.Verdict == VerdictKind.Continue && action.Effect is null)
                {
                    continue;
                }

                if (action.Effect is { Kind: EffectKind.Redirect or EffectKind.Dnat or EffectKind.Tproxy } && value.TryGetProperty("port", out var portValue)
                    && portValue.ValueKind == JsonValueKind.Object)
                {
                    // "to : tcp dport map { 8080 : 40635 }": only the map's keys get a target, the others do not match.
                    var map = PortMap(portValue);
                    if (map is null)
                    {
                        conditions.Add(FixedCondition.NotUnderstood($"the target port of '{key}'"));
                    }
                    else
                    {
                        conditions.Add(new PortCondition(PortField.Destination, new PortSet(map.Select(m => (m.From, m.From)))));
                        action = action with { Effect = action.Effect with { PortMap = map } };
                    }
                }

                if (action.Effect is { Kind: EffectKind.Dnat or EffectKind.Tproxy } && value.TryGetProperty("family", out var fam))
                {
                    // "dnat ip to ...", "tproxy ip6 to ...": in an inet table only that family is translated.
                    conditions.Add(new FamilyCondition(fam.GetString() == "ip6" ? ProbeFamily.V6 : ProbeFamily.V4));
                }

                return [new Rule(chain, handle, string.Join(' ', text), conditions, action)];
            }

            return [new Rule(chain, handle, string.Join(' ', text), conditions, RuleAction.Continue)];
        }

        private IEnumerable<Rule> VmapRules(Chain chain, long? handle, string text, List<Condition> conditions, JsonElement vmap)
        {
            var key = vmap.GetProperty("key");
            var entries = Elements(vmap.GetProperty("data"));
            if (entries is null)
            {
                yield return new Rule(chain, handle, text, [.. conditions, FixedCondition.NotUnderstood("a verdict map")], new RuleAction(VerdictKind.Unknown));
                yield break;
            }

            foreach (var entry in entries)
            {
                if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2)
                {
                    yield return new Rule(chain, handle, text, [.. conditions, FixedCondition.NotUnderstood("a verdict map entry")], new RuleAction(VerdictKind.Unknown));
                    continue;
                }

                var (verdictKey, verdictValue) = Single(entry[1]);
                var action = Statement(verdictKey, verdictValue) ?? new RuleAction(VerdictKind.Unknown);
                yield return new Rule(chain, handle, text, [.. conditions, Match(key, "==", entry[0])], action);
            }
        }

        private static RuleAction? Statement(string key, JsonElement value) => key switch
        {
            "accept" => new RuleAction(VerdictKind.Accept),
            "drop" or "reject" => new RuleAction(VerdictKind.Drop),
            "return" => new RuleAction(VerdictKind.Return),
            "continue" => RuleAction.Continue,
            "jump" => new RuleAction(VerdictKind.Jump, value.GetProperty("target").GetString()),
            "goto" => new RuleAction(VerdictKind.Goto, value.GetProperty("target").GetString()),
            "queue" => new RuleAction(VerdictKind.Unknown, Effect: new Effect(EffectKind.Queue, null, NftText.Expression(Wrap(key, value)))),

            // NAT statements end the nat chain for this packet.
            "redirect" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Redirect, Port(value), NftText.Expression(Wrap(key, value)))),
            "dnat" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Dnat, Port(value), NftText.Expression(Wrap(key, value)))),
            "tproxy" => new RuleAction(VerdictKind.Accept, Effect: new Effect(EffectKind.Tproxy, Port(value), NftText.Expression(Wrap(key, value)))),
            "snat" or "masquerade" => new RuleAction(VerdictKind.Accept),
            _ => null,
        };

        /// <summary>{"map": {"key": tcp dport, "data": {"set": [[8080, 40635], ...]}}}, or null when it is another form.</summary>
        private static List<(int From, int To)>? PortMap(JsonElement port)
        {
            if (!port.TryGetProperty("map", out var map) || !map.TryGetProperty("key", out var key) || !key.TryGetProperty("payload", out var payload)
                || !payload.TryGetProperty("field", out var field) || field.GetString() != "dport"
                || !map.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Object || !data.TryGetProperty("set", out var set)
                || set.ValueKind != JsonValueKind.Array)
            {
                return null;
            }

            var pairs = new List<(int, int)>();
            foreach (var entry in set.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2 || entry[0].ValueKind != JsonValueKind.Number
                    || entry[1].ValueKind != JsonValueKind.Number)
                {
                    return null;
                }

                pairs.Add((entry[0].GetInt32(), entry[1].GetInt32()));
            }

            return pairs;
        }

        private static int? Port(JsonElement value) =>
            value.ValueKind == JsonValueKind.Object && value.TryGetProperty("port", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt32() : null;

        private Condition Match(JsonElement left, string op, JsonElement right)
        {
            var negated = op == "!=";
            if (op is not ("==" or "!=" or "in") && !(op is "<" or ">" or "<=" or ">=" && IsPort(left)))
            {
                return FixedCondition.NotUnderstood($"the comparison '{op}' on {NftText.Value(left)}");
            }

            var (key, value) = Single(left);
            switch (key)
            {
                case "payload":
                    return Payload(value, op, right, negated);
                case "meta":
                    return Meta(value.GetProperty("key").GetString()!, right, negated);
                case "ct":
                    var ctKey = value.GetProperty("key").GetString();
                    if (value.TryGetProperty("dir", out _))
                    {
                        return FixedCondition.NotUnderstood($"ct {ctKey} of one direction");
                    }

                    return ctKey switch
                    {
                        "state" => Strings(right) is { } states ? new ConntrackStateCondition(states, negated) : NotUnderstood(left),
                        "status" => Strings(right) is { } statuses ? new ConntrackStatusCondition(statuses, negated) : NotUnderstood(left),
                        _ => NotUnderstood(left),
                    };
                case "fib":
                    return Fib(value, right, negated, left);
                default:
                    return NotUnderstood(left);
            }
        }

        private static bool IsPort(JsonElement left) =>
            left.TryGetProperty("payload", out var p) && p.TryGetProperty("field", out var f) && f.GetString() is "dport" or "sport";

        private Condition Payload(JsonElement payload, string op, JsonElement right, bool negated)
        {
            if (!payload.TryGetProperty("protocol", out var protocolElement))
            {
                return FixedCondition.NotUnderstood("a raw payload match");
            }

            var protocol = protocolElement.GetString()!;
            var field = payload.GetProperty("field").GetString()!;
            switch (protocol)
            {
                case "tcp" or "th":
                    if (field is "dport" or "sport")
                    {
                        var ports = Ports(op, right);
                        return ports is null
                            ? FixedCondition.NotUnderstood($"{protocol} {field} {NftText.Value(right)}")
                            : new PortCondition(field == "dport" ? PortField.Destination : PortField.Source, ports, negated);
                    }

                    return FixedCondition.NotUnderstood($"{protocol} {field}");
                case "udp" or "udplite" or "sctp" or "dccp" or "icmp" or "icmpv6" or "igmp" or "esp" or "ah" or "comp" or "gre":
                    return FixedCondition.OtherProtocol(protocol);
                case "ip" or "ip6":
                    var family = protocol == "ip" ? ProbeFamily.V4 : ProbeFamily.V6;
                    Condition inner = field switch
                    {
                        "saddr" => FixedCondition.DependsOn("the client's address"),
                        "daddr" => FixedCondition.DependsOn("the local address the client connects to"),
                        "protocol" or "nexthdr" => Strings(right) is { } names ? new ProtocolCondition(names, negated) : NotUnderstood(right),
                        _ => FixedCondition.NotUnderstood($"{protocol} {field}"),
                    };
                    return new FamilyGated(family, inner);
                default:
                    return FixedCondition.NotUnderstood($"{protocol} {field}");
            }
        }

        private Condition Meta(string key, JsonElement right, bool negated)
        {
            var values = Strings(right);
            if (values is null)
            {
                return FixedCondition.NotUnderstood($"meta {key} {NftText.Value(right)}");
            }

            return key switch
            {
                "l4proto" => new ProtocolCondition(values, negated),
                "nfproto" or "protocol" => values.Contains("ipv4") && values.Contains("ipv6") || values.Contains("ip") && values.Contains("ip6")
                    ? new FixedCondition(negated ? Truth.False : Truth.True, "both families")
                    : new FamilyCondition(values.Contains("ipv6") || values.Contains("ip6") ? ProbeFamily.V6 : ProbeFamily.V4, negated),
                "iif" or "iifname" => new InterfaceCondition(true, [.. values], negated),
                "oif" or "oifname" => new InterfaceCondition(false, [.. values], negated),
                "pkttype" => new PacketTypeCondition(values, negated),
                "iiftype" => FixedCondition.DependsOn("the input interface's type"),
                _ => FixedCondition.NotUnderstood($"meta {key}"),
            };
        }

        private Condition Fib(JsonElement fib, JsonElement right, bool negated, JsonElement left)
        {
            var result = fib.GetProperty("result").GetString();
            var flags = fib.TryGetProperty("flags", out var f) ? f.EnumerateArray().Select(x => x.GetString()).ToHashSet() : [];
            if (result == "type" && flags.Contains("daddr") && !flags.Contains("saddr"))
            {
                if (flags.Contains("iif") || flags.Contains("oif"))
                {
                    return FixedCondition.DependsOn("whether the address belongs to the input interface");
                }

                return Strings(right) is { } types ? new DestinationTypeCondition(types, negated) : NotUnderstood(left);
            }

            if (flags.Contains("saddr"))
            {
                return FixedCondition.DependsOn("the reverse path of the client's address");
            }

            return NotUnderstood(left);
        }

        private static FixedCondition NotUnderstood(JsonElement left) => FixedCondition.NotUnderstood(NftText.Value(left));

        /// <summary>The values a right-hand side names, as strings (ports, states, protocols, interface names); null when not understood.</summary>
        private HashSet<string>? Strings(JsonElement right)
        {
            var elements = Elements(right);
            if (elements is null)
            {
                return null;
            }

            var values = new HashSet<string>(StringComparer.Ordinal);
            foreach (var element in elements)
            {
                var e = Unwrap(element);
                switch (e.ValueKind)
                {
                    case JsonValueKind.String:
                        values.Add(e.GetString()!);
                        break;
                    case JsonValueKind.Number:
                        values.Add(e.GetRawText());
                        break;
                    default:
                        return null;
                }
            }

            return values;
        }

        private PortSet? Ports(string op, JsonElement right)
        {
            if (op is "<" or ">" or "<=" or ">=")
            {
                if (PortNumber(right) is not { } bound)
                {
                    return null;
                }

                return op switch
                {
                    "<" => new PortSet([(0, bound - 1)]),
                    "<=" => new PortSet([(0, bound)]),
                    ">" => new PortSet([(bound + 1, 65535)]),
                    _ => new PortSet([(bound, 65535)]),
                };
            }

            var elements = Elements(right);
            if (elements is null)
            {
                return null;
            }

            var ranges = new List<(int, int)>();
            foreach (var element in elements)
            {
                var e = Unwrap(element);
                if (e.ValueKind == JsonValueKind.Object && e.TryGetProperty("range", out var range) && range.GetArrayLength() == 2
                    && PortNumber(range[0]) is { } low && PortNumber(range[1]) is { } high)
                {
                    ranges.Add((low, high));
                }
                else if (PortNumber(e) is { } port)
                {
                    ranges.Add((port, port));
                }
                else
                {
                    return null;
                }
            }

            return new PortSet(ranges);
        }

        private static int? PortNumber(JsonElement e) =>
            e.ValueKind == JsonValueKind.Number ? e.GetInt32()
            : e.ValueKind == JsonValueKind.String && int.TryParse(e.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p
            : null;

        /// <summary>
        /// The elements a right-hand side stands for: one value, an anonymous set, a flag list, or a named set or map of
        /// this table. Null for forms doctor does not model (concatenations, named sets of another table).
        /// </summary>
        private List<JsonElement>? Elements(JsonElement right)
        {
            switch (right.ValueKind)
            {
                case JsonValueKind.String when right.GetString()!.StartsWith('@'):
                    return sets.TryGetValue((table.Family, table.Name, right.GetString()![1..]), out var named)
                        ? named.TryGetProperty("elem", out var elem) ? [.. elem.EnumerateArray()] : []
                        : null;
                case JsonValueKind.String or JsonValueKind.Number:
                    return [right];
                case JsonValueKind.Array:
                    return [.. right.EnumerateArray()];
                case JsonValueKind.Object when right.TryGetProperty("set", out var set):
                    return set.ValueKind == JsonValueKind.Array ? [.. set.EnumerateArray()] : [set];
                case JsonValueKind.Object when right.TryGetProperty("range", out _):
                    return [right];
                default:
                    return null;
            }
        }

        /// <summary>A set element with a timeout or counter is {"elem": {"val": ...}}.</summary>
        private static JsonElement Unwrap(JsonElement e) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty("elem", out var elem) && elem.TryGetProperty("val", out var val) ? val : e;
    }

    private static (string Key, JsonElement Value) Single(JsonElement e)
    {
        foreach (var property in e.EnumerateObject())
        {
            return (property.Name, property.Value);
        }

        throw new FormatException("An empty expression object in the nft JSON.");
    }

    private static JsonElement Wrap(string key, JsonElement value)
    {
        using var document = JsonDocument.Parse($"{{\"{key}\":{value.GetRawText()}}}");
        return document.RootElement.Clone();
    }

    /// <summary>Renders expressions back to something close to nft's own syntax, for messages.</summary>
    internal static class NftText
    {
        public static string Match(JsonElement match)
        {
            var op = match.GetProperty("op").GetString();
            var left = Value(match.GetProperty("left"));
            var right = Value(match.GetProperty("right"));
            return op is "==" or "in" ? $"{left} {right}" : $"{left} {op} {right}";
        }

        public static string Expression(JsonElement expression)
        {
            var (key, value) = Single(expression);
            return key switch
            {
                "accept" or "drop" or "return" or "continue" or "notrack" => key,
                "reject" => "reject",
                "jump" or "goto" => $"{key} {value.GetProperty("target").GetString()}",
                "redirect" or "dnat" or "tproxy" => $"{key}{(value.TryGetProperty("family", out var f) ? " " + f.GetString() : "")} to {Target(value)}",
                "vmap" => $"{Value(value.GetProperty("key"))} vmap {Value(value.GetProperty("data"))}",
                "limit" => $"limit rate {Raw(value, "rate")}/{Raw(value, "per")}",
                "match" => Match(value),
                _ => key,
            };
        }

        public static string Value(JsonElement e)
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.String:
                    return e.GetString()!;
                case JsonValueKind.Number:
                    return e.GetRawText();
                case JsonValueKind.Array:
                    return string.Join(",", e.EnumerateArray().Select(Value));
                case JsonValueKind.Null:
                    return "";
                case JsonValueKind.True:
                    return "exists";
                case JsonValueKind.False:
                    return "missing";
            }

            var (key, value) = Single(e);
            return key switch
            {
                "payload" when value.TryGetProperty("protocol", out var p) => $"{p.GetString()} {value.GetProperty("field").GetString()}",
                "meta" => value.GetProperty("key").GetString() is "iif" or "iifname" or "oif" or "oifname" ? value.GetProperty("key").GetString()! : $"meta {value.GetProperty("key").GetString()}",
                "ct" => $"ct {value.GetProperty("key").GetString()}",
                "fib" => $"fib {string.Join(" . ", value.TryGetProperty("flags", out var fl) ? fl.EnumerateArray().Select(x => x.GetString()) : [])} {value.GetProperty("result").GetString()}",
                "set" => value.ValueKind == JsonValueKind.Array ? "{ " + string.Join(", ", value.EnumerateArray().Select(Element)) + " }" : Value(value),
                "map" => $"{Value(value.GetProperty("key"))} map {Value(value.GetProperty("data"))}",
                "range" => $"{Value(value[0])}-{Value(value[1])}",
                "prefix" => $"{Value(value.GetProperty("addr"))}/{Value(value.GetProperty("len"))}",
                "concat" => string.Join(" . ", value.EnumerateArray().Select(Value)),
                "elem" => Value(value.GetProperty("val")),
                "&" or "|" or "^" => string.Join($" {key} ", value.EnumerateArray().Select(Value)),
                "accept" or "drop" or "return" or "continue" => key,
                "jump" or "goto" => $"{key} {value.GetProperty("target").GetString()}",
                _ => key,
            };
        }

        // A map's element is [key, value].
        private static string Element(JsonElement e) =>
            e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 ? $"{Value(e[0])} : {Value(e[1])}" : Value(e);

        private static string Target(JsonElement value)
        {
            var sb = new StringBuilder();
            if (value.TryGetProperty("addr", out var addr))
            {
                sb.Append(addr.ValueKind == JsonValueKind.String && addr.GetString()!.Contains(':', StringComparison.Ordinal) && value.TryGetProperty("port", out _)
                    ? $"[{addr.GetString()}]" : Value(addr));
            }

            if (value.TryGetProperty("port", out var port))
            {
                sb.Append(port.ValueKind == JsonValueKind.Object ? ": " : ":").Append(Value(port));
            }

            return sb.ToString();
        }

        private static string Raw(JsonElement e, string name) => e.TryGetProperty(name, out var v) ? Value(v) : "?";
    }
}

/// <summary>All tables of one network namespace, as doctor reads them.</summary>
internal sealed class Ruleset(IReadOnlyList<Table> tables)
{
    public IReadOnlyList<Table> Tables { get; } = tables;

    public IEnumerable<Chain> BaseChains(string hook) =>
        Tables.SelectMany(t => t.Chains.Values).Where(c => c.Hook?.Hook == hook);

    public Table? Find(string family, string name) => Tables.FirstOrDefault(t => t.Family == family && t.Name == name && t.Source == RuleSource.Nftables);

    /// <summary>This ruleset with the tables of another source (iptables-legacy) added.</summary>
    public Ruleset With(IEnumerable<Table> more) => new([.. Tables, .. more]);
}
