using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Migration.Gre;
using Switchover.Migration.Model;
using Switchover.Netfilter;

namespace Switchover.Migration.Plan;

/// <summary>
/// Turns a migration spec and the facts of one host into the changes that host needs (the recipe of
/// gre-migration.md). Pure: the same spec and facts give the same plan, and what is already in place is left out,
/// so applying twice changes nothing the second time.
/// </summary>
public static class MigrationPlanner
{
    /// <summary>The sysctls the plan may change, so that their values can be read first.</summary>
    public static IEnumerable<string> SysctlKeys(MigrationSpec spec, string? uplink)
    {
        yield return "net.ipv4.conf.all.rp_filter";
        yield return $"net.ipv4.conf.{spec.TunnelDevice}.rp_filter";
        if (spec.Side == MigrationSide.Old)
        {
            yield return "net.ipv4.ip_forward";
            yield return "net.ipv6.conf.all.forwarding";
            yield return $"net.ipv4.conf.{spec.TunnelDevice}.accept_local";
        }
        else if (uplink is not null)
        {
            yield return $"net.ipv4.conf.{uplink}.accept_local";
        }
    }

    /// <summary>Problems that only the host can reveal (addresses it owns, a tunnel to itself); empty when the plan may go ahead.</summary>
    public static IReadOnlyList<string> ValidateOnHost(MigrationSpec spec, HostFacts facts, IEnumerable<SteeredTuple> tuplesOfOtherMigrations)
    {
        var errors = new List<string>(spec.Validate());
        if (facts.Owns(spec.RemoteOuter))
        {
            errors.Add($"The tunnel's remote end {spec.RemoteOuter} is an address of this host: a tunnel to itself. --remote must be the other host's address.");
        }

        if (!facts.Owns(spec.LocalOuter) && !(spec.Side == MigrationSide.New && spec.MovedAddresses.Contains(spec.LocalOuter)))
        {
            errors.Add($"The tunnel's local end {spec.LocalOuter} is not an address of this host. --local must be one of: {string.Join(", ", facts.LocalAddresses)}.");
        }

        if (spec.Side == MigrationSide.Old)
        {
            foreach (var tuple in spec.Tuples.Where(t => !facts.Owns(t.Address)))
            {
                errors.Add($"Tuple {tuple}: {tuple.Address} is not an address of this host. The old host can only move tuples of addresses it owns.");
            }
        }

        if (facts.Uplink is null)
        {
            errors.Add($"This host has no route to the tunnel's remote end {spec.RemoteOuter}.");
        }

        foreach (var tuple in spec.Tuples.Intersect(tuplesOfOtherMigrations))
        {
            errors.Add($"Overlapping tuples: {tuple} is already moved by another migration on this host.");
        }

        if (spec.Tuples.Any(t => t.IsIPv6) && !facts.HasIPv6)
        {
            errors.Add("IPv6 tuples need IPv6, which is disabled on this host.");
        }

        return errors;
    }

    /// <summary>
    /// What the kernel's GRE cannot do for this side; empty when `migrate setup` may create the kernel link. The kernel's
    /// ip6gre drops every inner IPv6 packet whose source is the tunnel's remote end (ip6gre_xmit_ipv6 in
    /// net/ipv6/ip6_gre.c, a guard against loops; it counts a tx error), and IPv4's gre has no such check. On the new host
    /// with an IPv6 outer whose remote end is also a moved address (the old host's only address), that is every reply of
    /// a moved IPv6 flow: the health check of `move` gets no answer. Found in the VM lab (`ip -s link`: tx errors on the
    /// new host's ip6gre link, one per reply).
    /// </summary>
    public static IReadOnlyList<string> ValidateKernelTunnel(MigrationSpec spec)
    {
        if (spec.Side == MigrationSide.New && spec.RemoteOuter.AddressFamily == AddressFamily.InterNetworkV6 && spec.MovedAddresses.Contains(spec.RemoteOuter))
        {
            return [$"The kernel's ip6gre cannot carry this host's replies: it drops every IPv6 packet whose source is the tunnel's remote end, and " +
                $"{spec.RemoteOuter} is both the old host's tunnel end and a moved address, the source of every reply. Run the userspace tunnel on " +
                $"this host first (switchover tunnel run --dataplane userspace --name {spec.TunnelDevice} --local {spec.LocalOuter} --remote {spec.RemoteOuter} " +
                $"--key K --mtu {spec.Mtu}{spec.TunnelRunEncapsulation}), or give the old host a second IPv6 address for its tunnel end (--remote here, --local there)."];
        }

        return [];
    }

    /// <summary>
    /// Gives a new migration the first mark and route table (from <see cref="MigrationSpec.DefaultMark"/> and
    /// <see cref="MigrationSpec.DefaultRouteTable"/> up, in step) that neither another migration nor the host uses,
    /// where the spec leaves them to the host.
    /// </summary>
    public static MigrationSpec PickFree(MigrationSpec spec, HostFacts facts, IReadOnlyList<MigrationJournal> others)
    {
        if (spec.Mark != MigrationSpec.PickFree && spec.RouteTable != MigrationSpec.PickFree)
        {
            return spec;
        }

        for (var i = 0; MigrationSpec.DefaultRouteTable + i <= 252; i++)
        {
            var mark = spec.Mark == MigrationSpec.PickFree ? MigrationSpec.DefaultMark + (uint)i : spec.Mark;
            var table = spec.RouteTable == MigrationSpec.PickFree ? MigrationSpec.DefaultRouteTable + i : spec.RouteTable;
            if ((spec.Mark != MigrationSpec.PickFree || MarkUser(mark, facts, others) is null)
                && (spec.RouteTable != MigrationSpec.PickFree || TableUser(table, facts, others) is null))
            {
                return spec with { Mark = mark, RouteTable = table };
            }
        }

        throw new MigrationException(["No free fwmark and routing table pair is left on this host: give --mark and --table."]);
    }

    /// <summary>
    /// What a new migration would share with another migration or with the host (its mark, route table, tunnel device,
    /// link network); empty when it shares nothing. Run before the first setup only: afterwards they are its own.
    /// </summary>
    public static IReadOnlyList<string> ValidateResources(MigrationSpec spec, HostFacts facts, IReadOnlyList<MigrationJournal> others)
    {
        var errors = new List<string>();
        var mark = "0x" + spec.Mark.ToString("x", CultureInfo.InvariantCulture);
        if (MarkUser(spec.Mark, facts, others) is { } markUser)
        {
            errors.Add($"fwmark {mark} is already used by {markUser}. Give another --mark, or leave it out and a free one is picked.");
        }

        if (TableUser(spec.RouteTable, facts, others) is { } tableUser)
        {
            errors.Add($"Routing table {spec.RouteTable} is already used by {tableUser}. Give another --table, or leave it out and a free one is picked.");
        }

        foreach (var other in others.Where(o => o.TunnelDevice == spec.TunnelDevice))
        {
            errors.Add($"Tunnel device {spec.TunnelDevice} already belongs to migration '{other.Name}'. Give this one its own --tunnel.");
        }

        var network = spec.EffectiveLinkNetwork;
        foreach (var other in others.Where(o => o.ToSpec().EffectiveLinkNetwork.Equals(network)))
        {
            errors.Add($"Link network {network}/30 is already used by migration '{other.Name}' (the same GRE key?). Give --link-network, the same on both hosts.");
        }

        var linkAddress = IPAddress.Parse(spec.LinkAddress.Split('/')[0]);
        // Taken, unless by the tunnel device itself (a setup run again). A userspace tunnel's device exists before the
        // setup, so which device holds the address decides, where the host said.
        var holder = facts.DeviceOf(linkAddress);
        if (facts.Owns(linkAddress) && (!facts.TunnelDeviceExists || holder is not null && holder != spec.TunnelDevice))
        {
            errors.Add($"The tunnel's link address {linkAddress} is already an address of this host{(holder is null ? string.Empty : $" (on {holder})")}. " +
                "Give --link-network, the same on both hosts.");
        }

        return errors;
    }

    private static string? MarkUser(uint mark, HostFacts facts, IReadOnlyList<MigrationJournal> others)
    {
        if (others.FirstOrDefault(o => o.Mark == mark) is { } other)
        {
            return $"migration '{other.Name}'";
        }

        var rule = facts.Rules.FirstOrDefault(r => r.Selectors.TryGetValue("fwmark", out var value) && ParseMark(value) == mark);
        return rule is null ? null : $"the IPv{(rule.IPv6 ? 6 : 4)} policy-routing rule {rule.Priority} (ip rule)";
    }

    private static string? TableUser(int table, HostFacts facts, IReadOnlyList<MigrationJournal> others)
    {
        var name = table.ToString(CultureInfo.InvariantCulture);
        if (others.FirstOrDefault(o => o.RouteTable == table) is { } other)
        {
            return $"migration '{other.Name}'";
        }

        if (facts.Rules.FirstOrDefault(r => r.Table == name) is { } rule)
        {
            return $"the IPv{(rule.IPv6 ? 6 : 4)} policy-routing rule {rule.Priority} (ip rule)";
        }

        return facts.DefaultRoutes.Any(r => r.Table == name) ? "a default route in it (ip route show table " + name + ")" : null;
    }

    /// <summary>A mark as `ip rule` prints it: 0x2f, or 0x2f/0xff with a mask.</summary>
    private static uint? ParseMark(string text)
    {
        var value = text.Split('/')[0];
        return value.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            && uint.TryParse(value.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var mark)
            ? mark
            : uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out mark) ? mark : null;
    }

    /// <param name="others">The journals of the other migrations on this host: whether a FOU port there is one of theirs.</param>
    public static IReadOnlyList<HostChange> Plan(MigrationSpec spec, HostFacts facts, bool createKernelTunnel, IReadOnlyList<MigrationJournal>? others = null)
    {
        var changes = new List<HostChange>();
        var tun = spec.TunnelDevice;
        var table = spec.RouteTable.ToString(CultureInfo.InvariantCulture);
        var families = facts.HasIPv6 ? new[] { false, true } : [false];

        if (createKernelTunnel)
        {
            // The kernel dataplane renders its own commands; the plan only journals them with their undo.
            var options = new TunnelOptions { Name = tun, Local = spec.LocalOuter, Remote = spec.RemoteOuter, Key = spec.Key, Mtu = spec.Mtu, Encapsulation = spec.Encapsulation };
            if (spec.Encapsulation == TunnelEncapsulation.GreInUdp)
            {
                // The FOU receive port before the link, and gone after it (when no other migration still uses it).
                changes.Add(FouChange(spec, facts, options, others ?? []));
            }

            var what = spec.Encapsulation == TunnelEncapsulation.GreInUdp ? $"GRE in UDP (port {TunnelOptions.GreInUdpPort})" : "GRE";
            changes.Add(new HostChange($"link:{tun}",
                $"create the kernel GRE tunnel {tun} {spec.LocalOuter} -> {spec.RemoteOuter} key {spec.Key}" +
                (spec.Encapsulation == TunnelEncapsulation.GreInUdp ? $" in UDP (encap fou, port {TunnelOptions.GreInUdpPort})" : string.Empty) +
                $", and table inet {KernelGreDataplane.Filter(options).TableName}: {what} to {spec.LocalOuter} from anyone but {spec.RemoteOuter} is dropped",
                [Of(KernelGreDataplane.AddCommand(options)), Of(KernelGreDataplane.FilterCommand(options)), Of(KernelGreDataplane.UpCommand(options))],
                [Of(KernelGreDataplane.FilterDeleteCommand(options)), Of(KernelGreDataplane.DeleteCommand(options))]));
        }

        var linkAddress = IPAddress.Parse(spec.LinkAddress.Split('/')[0]);
        if (!facts.Owns(linkAddress))
        {
            changes.Add(new HostChange($"addr:{tun}:{spec.LinkAddress}", $"give the tunnel its link address {spec.LinkAddress}",
                [HostCommand.Of("ip", "addr", "add", spec.LinkAddress, "dev", tun)],
                [HostCommand.Of("ip", "addr", "del", spec.LinkAddress, "dev", tun)]));
        }

        var holds = new List<HostChange>();
        if (spec.Side == MigrationSide.Old)
        {
            Sysctl(changes, facts, "net.ipv4.ip_forward", "1", "forward the moved flows into the tunnel");
            if (facts.HasIPv6)
            {
                Sysctl(changes, facts, "net.ipv6.conf.all.forwarding", "1", "forward moved IPv6 flows into the tunnel");
            }

            Sysctl(changes, facts, $"net.ipv4.conf.{tun}.accept_local", "1", "accept packets from the tunnel whose source is this host's own (moved) address");
        }
        else
        {
            // Held last, after the rules below: from the moment the address is local here, replies to it (this host's sshd
            // answering the old host driving it, our outer GRE) go to lo unless rule 50 and the moved local rule already
            // send them out; looped back, a reply draws a RST that resets the sshd session (found in the VM lab).
            foreach (var address in spec.MovedAddresses)
            {
                var prefix = address.AddressFamily == AddressFamily.InterNetworkV6 ? "/128" : "/32";
                if (!facts.Owns(address))
                {
                    // IPv6 also puts a /128 prefix route for it into table main (IPv4 only a local-table route): with it,
                    // the outer-GRE rule's lookup in main would loop our GRE to the old host's address back into lo.
                    string[] add = address.AddressFamily == AddressFamily.InterNetworkV6
                        ? ["ip", "addr", "add", address + prefix, "dev", "lo", "noprefixroute"]
                        : ["ip", "addr", "add", address + prefix, "dev", "lo"];
                    holds.Add(new HostChange($"addr:lo:{address}", $"hold the moved address {address} on lo, so services can bind it",
                        [HostCommand.Of(add)],
                        [HostCommand.Of("ip", "addr", "del", address + prefix, "dev", "lo")]));
                }
            }

            if (facts.Uplink is { } uplink)
            {
                Sysctl(changes, facts, $"net.ipv4.conf.{uplink}.accept_local", "1", "accept outer GRE packets whose source is the moved address, now also ours");
            }
        }

        Sysctl(changes, facts, "net.ipv4.conf.all.rp_filter", "0", "no reverse-path filter across the tunnel (the effective value is the larger of all and the device's)");
        Sysctl(changes, facts, $"net.ipv4.conf.{tun}.rp_filter", "0", "no reverse-path filter on the tunnel");

        foreach (var ipv6 in families)
        {
            var ip = ipv6 ? new[] { "ip", "-6" } : ["ip", "-4"];
            if (!facts.DefaultRoutes.Contains((ipv6, table, tun)))
            {
                changes.Add(new HostChange($"route:{(ipv6 ? 6 : 4)}:{table}", $"table {table}: everything into the tunnel (IPv{(ipv6 ? 6 : 4)})",
                    [HostCommand.Of([.. ip, "route", "add", "default", "dev", tun, "table", table])],
                    [HostCommand.Of([.. ip, "route", "del", "default", "dev", tun, "table", table])]));
            }

            var mark = "0x" + spec.Mark.ToString("x", CultureInfo.InvariantCulture);
            Rule(changes, facts, ipv6, MigrationSpec.MarkRulePriority, table, new() { ["fwmark"] = mark }, ["fwmark", mark],
                spec.Side == MigrationSide.Old ? "packets of moved flows (fwmark) go into the tunnel" : "replies of flows that came through the tunnel go back through it");
            if (spec.Side == MigrationSide.New)
            {
                foreach (var address in spec.MovedAddresses.Where(a => (a.AddressFamily == AddressFamily.InterNetworkV6) == ipv6))
                {
                    Rule(changes, facts, ipv6, MigrationSpec.SourceRulePriority, table, new() { ["src"] = address.ToString(), ["iif"] = "lo" },
                        ["from", address.ToString(), "iif", "lo"], $"what the services send from {address} goes into the tunnel");
                }

                if ((spec.RemoteOuter.AddressFamily == AddressFamily.InterNetworkV6) == ipv6 && spec.MovedAddresses.Contains(spec.RemoteOuter))
                {
                    // The old host's outer address is now local here too: our own outer GRE packets must still leave. GRE in
                    // UDP: the UDP rule routes a userspace tunnel's socket and passes the reverse-path check of the datagrams
                    // from the old host's port 4754; a kernel FOU link looks up its route as GRE (fou_build_udp leaves the
                    // flow alone), so without the GRE rule its packets to the old host are delivered here (found in the VM lab).
                    string[][] outers = spec.Encapsulation == TunnelEncapsulation.GreInUdp ? [spec.OuterSelectors, ["ipproto", "gre"]] : [spec.OuterSelectors];
                    foreach (var outer in outers)
                    {
                        var selectors = new Dictionary<string, string> { ["dst"] = spec.RemoteOuter.ToString() };
                        for (var i = 0; i < outer.Length; i += 2)
                        {
                            selectors[outer[i]] = outer[i + 1];
                        }

                        Rule(changes, facts, ipv6, MigrationSpec.OuterRulePriority, "main", selectors,
                            ["to", spec.RemoteOuter.ToString(), .. outer], $"outer GRE packets to {spec.RemoteOuter} still leave by the uplink");
                    }
                }

                foreach (var control in spec.Control.Where(c => (c.AddressFamily == AddressFamily.InterNetworkV6) == ipv6 && spec.MovedAddresses.Contains(c.Address)).Distinct())
                {
                    // This host drives the old one over SSH at an address it now holds itself: those connections must still leave.
                    var port = control.Port.ToString(CultureInfo.InvariantCulture);
                    Rule(changes, facts, ipv6, MigrationSpec.OuterRulePriority, "main",
                        new() { ["dst"] = control.Address.ToString(), ["ipproto"] = "tcp", ["dport"] = port },
                        ["to", control.Address.ToString(), "ipproto", "tcp", "dport", port], $"SSH to the old host at {control} still leaves by the uplink");
                }

                if (spec.ControlClient is { } client && (client.AddressFamily == AddressFamily.InterNetworkV6) == ipv6 && spec.MovedAddresses.Contains(client.Address))
                {
                    // The old host drives this one over SSH from the address that is now local here too: its session's replies must still leave.
                    var port = client.Port.ToString(CultureInfo.InvariantCulture);
                    Rule(changes, facts, ipv6, MigrationSpec.OuterRulePriority, "main",
                        new() { ["dst"] = client.Address.ToString(), ["ipproto"] = "tcp", ["sport"] = port },
                        ["to", client.Address.ToString(), "ipproto", "tcp", "sport", port], $"replies of this host's sshd (port {port}) to the old host at {client.Address} still leave by the uplink");
                }
            }

            MoveLocalRule(changes, facts, ipv6);
        }

        changes.AddRange(holds);
        var steering = new SteeringTable(spec.Name.Value, spec.Side == MigrationSide.Old, tun, spec.Mark, spec.Tuples, spec.MovedAddresses);
        if (facts.NftTables.Contains("inet " + steering.TableName))
        {
            // Set up already: its tuples change only through move and return, never by replacing the table.
            return changes;
        }

        changes.Add(new HostChange($"nft:{steering.TableName}", $"nftables table inet {steering.TableName}",
            [new HostCommand(["nft", "-f", "-"], steering.Render())],
            [new HostCommand(["nft", "-f", "-"], SteeringTable.RenderDelete(steering.TableName))]));
        return changes;
    }

    /// <summary>The id of a FOU port change this migration made: it opened the port, and removes it when the last to use it.</summary>
    public const string FouOwned = "fou";

    /// <summary>The id of a FOU port another migration opened: shared, removed by whichever migration is the last to use it.</summary>
    public const string FouShared = "fou-shared";

    /// <summary>The id of a FOU port that was there before any migration (`ip fou add` by hand, a tunnel agent): never removed by a migration.</summary>
    public const string FouForeign = "fou-foreign";

    /// <summary>
    /// What the kernel dataplane's GRE in UDP needs of this host; empty when it may go ahead. The kernel must have FOU
    /// (its fou module), and the FOU port 4754 of the outer family, when there, must hand its datagrams to GRE
    /// (ipproto 47): one for another protocol, or GUE, is someone else's and stays as it is.
    /// </summary>
    public static IReadOnlyList<string> ValidateFou(MigrationSpec spec, HostFacts facts)
    {
        if (spec.Encapsulation != TunnelEncapsulation.GreInUdp)
        {
            return [];
        }

        var family = spec.HasIPv6Outer ? 6 : 4;
        if (facts.FouUnavailable is { } reason)
        {
            return [$"This kernel has no FOU (foo-over-UDP; 'ip fou show': {reason}), which the kernel's GRE needs for --encapsulation udp. " +
                "Load it (modprobe fou) and run the setup again, or start the userspace tunnel first (switchover tunnel run --dataplane userspace " +
                $"--name {spec.TunnelDevice} --local {spec.LocalOuter} --remote {spec.RemoteOuter} --key K --mtu {spec.Mtu} --encapsulation udp), " +
                "which speaks GRE in UDP itself. Nothing was changed."];
        }

        if (facts.FouPort(spec.HasIPv6Outer, TunnelOptions.GreInUdpPort) is { Protocol: not GreProtocol } other)
        {
            return [$"UDP port {TunnelOptions.GreInUdpPort} (IPv{family}) is already a FOU port for {(other.Protocol is { } p ? $"IP protocol {p}" : "GUE")}, " +
                $"not GRE ('ip fou show': {other}): GRE in UDP cannot be received there. It is not this migration's to change: remove it if nothing " +
                $"needs it (ip fou del port {TunnelOptions.GreInUdpPort}{(spec.HasIPv6Outer ? " -6" : string.Empty)}), or use --encapsulation gre on both hosts. " +
                "Nothing was changed."];
        }

        return [];
    }

    /// <summary>
    /// A change as teardown, finalize or a failed setup undoes it: a FOU port that another migration on this host still
    /// uses is kept (no undo), the others as journaled.
    /// </summary>
    public static HostChange ForUndo(HostChange change, IReadOnlyList<MigrationJournal> others)
    {
        if (FouKey(change) is not { } key || change.Undo.Count == 0
            || others.FirstOrDefault(o => o.Applied.Any(c => FouKey(c) == key)) is not { } user)
        {
            return change;
        }

        return change with
        {
            Description = $"keep the FOU port {key.Port} (IPv{key.Family}): migration '{user.Name}' still uses it",
            Undo = [],
        };
    }

    private const int GreProtocol = 47;

    /// <summary>The port and family of a FOU port change (owned, shared or foreign), or null for any other change.</summary>
    internal static (int Port, int Family)? FouKey(HostChange change)
    {
        var parts = change.Id.Split(':');
        return parts.Length == 3 && parts[0] is FouOwned or FouShared or FouForeign
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var family)
            ? (port, family)
            : null;
    }

    /// <summary>
    /// The FOU receive port is one per port and family on a host, not per link: the migration that finds none opens it
    /// (owned); one that finds it opened by another migration shares it; one that finds it made by someone else uses it
    /// and never removes it. An owned or shared port is removed by the last migration that uses it (<see cref="ForUndo"/>).
    /// </summary>
    private static HostChange FouChange(MigrationSpec spec, HostFacts facts, TunnelOptions options, IReadOnlyList<MigrationJournal> others)
    {
        var port = TunnelOptions.GreInUdpPort;
        var family = spec.HasIPv6Outer ? 6 : 4;
        var key = (port, family);
        var id = string.Create(CultureInfo.InvariantCulture, $"{port}:{family}");
        if (facts.FouPort(spec.HasIPv6Outer, port) is null)
        {
            return new HostChange($"{FouOwned}:{id}", $"receive GRE in UDP on port {port} (FOU, IPv{family}): open the port; removed by the last migration here that uses it",
                [Of(KernelGreDataplane.FouAddCommand(options))], [Of(KernelGreDataplane.FouDeleteCommand(options))]);
        }

        if (others.FirstOrDefault(o => o.Applied.Any(c => FouKey(c) == key && !c.Id.StartsWith(FouForeign + ":", StringComparison.Ordinal))) is { } opener)
        {
            return new HostChange($"{FouShared}:{id}",
                $"receive GRE in UDP on port {port} (FOU, IPv{family}): share the port migration '{opener.Name}' opened; removed by the last migration here that uses it",
                [], [Of(KernelGreDataplane.FouDeleteCommand(options))]);
        }

        return new HostChange($"{FouForeign}:{id}",
            $"receive GRE in UDP on port {port} (FOU, IPv{family}): use the port that was there before (not a migration's): left in place", [], []);
    }

    private static HostCommand Of(Processes.Command command) => new([command.FileName, .. command.Arguments], command.StandardInput);

    private static void Sysctl(List<HostChange> changes, HostFacts facts, string key, string value, string why)
    {
        var current = facts.Sysctl(key);
        if (current == value)
        {
            return;
        }

        changes.Add(new HostChange($"sysctl:{key}", $"{key} {current ?? "?"} -> {value}: {why}",
            [HostCommand.Of("sysctl", "-q", "-w", $"{key}={value}")],
            current is null ? [] : [HostCommand.Of("sysctl", "-q", "-w", $"{key}={current}")]));
    }

    private static void Rule(List<HostChange> changes, HostFacts facts, bool ipv6, int priority, string table, Dictionary<string, string> selectors, string[] selectorArguments, string why)
    {
        var exists = facts.Rules.Any(r => r.IPv6 == ipv6 && r.Priority == priority && r.Table == table
            && r.Selectors.Count == selectors.Count && selectors.All(s => r.Selectors.TryGetValue(s.Key, out var v) && v == s.Value));
        if (exists)
        {
            return;
        }

        string[] ip = ipv6 ? ["ip", "-6"] : ["ip", "-4"];
        var pref = priority.ToString(CultureInfo.InvariantCulture);
        changes.Add(new HostChange($"rule:{(ipv6 ? 6 : 4)}:{pref}:{string.Join(' ', selectorArguments)}", $"rule {pref} {string.Join(' ', selectorArguments)} lookup {table}: {why}",
            [HostCommand.Of([.. ip, "rule", "add", "pref", pref, .. selectorArguments, "lookup", table])],
            [HostCommand.Of([.. ip, "rule", "del", "pref", pref, .. selectorArguments, "lookup", table])]));
    }

    /// <summary>The local table's rule must come after ours; add the new one first, then delete the old: no window without it.</summary>
    private static void MoveLocalRule(List<HostChange> changes, HostFacts facts, bool ipv6)
    {
        var local = facts.Rules.Where(r => r.IPv6 == ipv6 && r.IsLocalTable).ToList();
        if (local.Count == 0 || local.All(r => r.Priority > MigrationSpec.MarkRulePriority))
        {
            return;
        }

        string[] ip = ipv6 ? ["ip", "-6"] : ["ip", "-4"];
        var from = local.Min(r => r.Priority).ToString(CultureInfo.InvariantCulture);
        var to = MigrationSpec.LocalRulePriority.ToString(CultureInfo.InvariantCulture);
        changes.Add(new HostChange($"local-rule:{(ipv6 ? 6 : 4)}", $"move the local table's rule (IPv{(ipv6 ? 6 : 4)}) from {from} to {to}, after the tunnel's rules",
            [HostCommand.Of([.. ip, "rule", "add", "pref", to, "lookup", "local"]), HostCommand.Of([.. ip, "rule", "del", "pref", from, "lookup", "local"])],
            [HostCommand.Of([.. ip, "rule", "add", "pref", from, "lookup", "local"]), HostCommand.Of([.. ip, "rule", "del", "pref", to, "lookup", "local"])]));
    }
}
