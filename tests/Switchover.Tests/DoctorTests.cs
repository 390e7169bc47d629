using Switchover.Cli;
using Switchover.Cli.Doctor;
using static Switchover.Tests.DoctorFixtures;

namespace Switchover.Tests;

/// <summary>doctor's analysis of real rulesets (see DoctorFixtures for how they were made).</summary>
public sealed class DoctorTests
{
    [Fact]
    public void A_clean_host_reports_everything_ok_and_exits_0()
    {
        var report = Analyze(Shape("clean"));

        Assert.All(report.Findings, f => Assert.True(f.Severity is Severity.Ok or Severity.Info, DoctorText.Render(report)));
        Assert.Equal(Severity.Ok, report.Single("firewall").Severity);
        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, port.Severity);
        Assert.Contains("allowed from the network for IPv4 and IPv6", port.Message, StringComparison.Ordinal);
        report.AssertNone("private-ports");
        Assert.Equal(ExitCodes.Success, report.ExitCode);
    }

    [Theory]
    [InlineData("nft-drop-allows-8080")]
    [InlineData("nft-policy-drop")]
    public void An_nft_drop_policy_that_allows_the_port_names_the_rule_that_accepts_it(string shape)
    {
        var report = Analyze(Shape(shape));

        var firewall = report.Single("firewall", "nftables");
        Assert.Contains("inet host_fw input policy drop", firewall.Message, StringComparison.Ordinal);
        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, port.Severity);
        Assert.Contains("accepted by inet host_fw input rule \"tcp dport 8080 accept\"", port.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Success, report.ExitCode);
        Assert.Equal(Severity.Problem, Analyze(Shape(shape), ports: [8081]).Single("port", "tcp/8081").Severity);
    }

    [Fact]
    public void An_nft_drop_policy_without_the_port_is_a_problem_with_the_rule_to_add()
    {
        var report = Analyze(Shape("nft-drop-allows-22"));

        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Problem, port.Severity);
        Assert.Contains("IPv4 and IPv6: dropped by inet host_fw input (policy drop)", port.Message, StringComparison.Ordinal);
        Assert.StartsWith("allow it: nft insert rule inet host_fw input tcp dport 8080 accept", port.Advice, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Failure, report.ExitCode);

        // The same firewall allows ssh.
        Assert.Equal(Severity.Ok, Analyze(Shape("nft-drop-allows-22"), ports: [22]).Single("port", "tcp/22").Severity);
    }

    [Fact]
    public void With_the_redirect_steering_a_drop_policy_also_has_to_allow_the_private_ports()
    {
        var tproxy = Analyze(Shape("nft-drop-allows-8080"));
        var redirect = Analyze(Shape("nft-drop-allows-8080"), steering: Steering.Redirect);

        var note = tproxy.Single("private-ports");
        Assert.Equal(Severity.Info, note.Severity);
        Assert.Contains("would have to be allowed too", note.Message, StringComparison.Ordinal);
        var problem = redirect.Single("private-ports");
        Assert.Equal(Severity.Problem, problem.Severity);
        Assert.Contains("dropped by inet host_fw input (policy drop)", problem.Message, StringComparison.Ordinal);
        Assert.Contains("ip_local_port_range 32768-60999", problem.Message, StringComparison.Ordinal);
        Assert.Contains("Steering=Tproxy", problem.Advice, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Failure, redirect.ExitCode);
    }

    [Fact]
    public void A_drop_policy_that_forgets_lo_stops_the_readiness_request_but_not_the_public_port()
    {
        var report = Analyze(Shape("nft-drop-without-lo"));

        Assert.Equal(Severity.Ok, report.Single("port", "tcp/8080").Severity);
        var loopback = report.Single("loopback");
        Assert.Equal(Severity.Problem, loopback.Severity);
        Assert.Equal("tcp/32768", loopback.Subject);
        Assert.Contains("the readiness request of a new generation to its own private port", loopback.Message, StringComparison.Ordinal);
        Assert.Contains("IPv4: dropped by inet host_fw input (policy drop)", loopback.Message, StringComparison.Ordinal);
        Analyze(Shape("nft-drop-allows-8080")).AssertNone("loopback");
    }

    [Fact]
    public void Iptables_nft_input_drop_with_an_accept_for_the_port_is_allowed_for_both_families()
    {
        var report = Analyze(Shape("iptables-allows-8080"));

        var firewall = report.Single("firewall", "iptables");
        Assert.Contains("ip filter INPUT policy drop, ip6 filter INPUT policy drop", firewall.Message, StringComparison.Ordinal);
        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, port.Severity);
        Assert.Contains("ip filter INPUT rule", port.Message, StringComparison.Ordinal);
        Assert.Contains("ip6 filter INPUT rule", port.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Problem, Analyze(Shape("iptables-allows-8080"), ports: [9090]).Single("port", "tcp/9090").Severity);
    }

    [Theory]
    [InlineData("ufw-allows-8080")] // ufw enable; ufw allow 8080/tcp, run by make-rulesets.sh
    [InlineData("ufw-fixture")] // the same, captured by FirewallTests' capture.sh
    public void Real_ufw_that_allows_the_port_is_recognised_and_its_user_rule_named(string shape)
    {
        var report = Analyze(Shape(shape));

        var firewall = report.Single("firewall", "ufw");
        Assert.Contains("iptables-nft tables ip filter, ip6 filter; input: ip filter INPUT policy drop, ip6 filter INPUT policy drop", firewall.Message, StringComparison.Ordinal);
        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, port.Severity);
        Assert.Contains("ip filter ufw-user-input rule \"tcp dport 8080 accept\"", port.Message, StringComparison.Ordinal);
        Assert.Contains("ip6 filter ufw6-user-input rule \"tcp dport 8080 accept\"", port.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Success, report.ExitCode);
    }

    [Theory]
    [InlineData("ufw-allows-8080")]
    [InlineData("ufw-fixture")]
    public void Ufw_blocking_the_port_advises_ufw_allow(string shape)
    {
        var port = Analyze(Shape(shape), ports: [9090]).Single("port", "tcp/9090");

        Assert.Equal(Severity.Problem, port.Severity);
        Assert.Contains("IPv4: dropped by ip filter INPUT (policy drop); IPv6: dropped by ip6 filter INPUT (policy drop)", port.Message, StringComparison.Ordinal);
        Assert.Equal("allow it: ufw allow 9090/tcp", port.Advice);
    }

    [Fact]
    public void Without_iptables_save_the_matches_nft_shows_only_by_name_are_not_understood_never_allowed()
    {
        // ufw's chains hold -m conntrack and -m addrtype (ufw-not-local ends in a drop): from nft's JSON alone doctor
        // cannot tell whether 8080 gets through, so it must say so instead of guessing.
        var report = Analyze(Shape("ufw-allows-8080") with { IptablesNft = null, Ip6tablesNft = null });

        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Warning, port.Severity);
        Assert.Contains("not understood", port.Message, StringComparison.Ordinal);
        Assert.True(port.Message.Contains("the iptables match 'conntrack'", StringComparison.Ordinal), port.Message);
        Assert.Contains(report.Findings, f => f is { Check: "ruleset", Severity: Severity.Warning } && f.Advice!.Contains("apt-get install iptables", StringComparison.Ordinal));
        Assert.Equal(ExitCodes.Warnings, report.ExitCode);
    }

    [Fact]
    public void A_firewalld_table_that_ends_in_a_catch_all_reject_is_read_through_its_zone_chains()
    {
        var report = Analyze(Shape("firewalld-like-allows-8080"), ports: [8080, 9090]);

        var firewall = report.Single("firewall", "firewalld");
        Assert.Contains("inet firewalld filter_INPUT policy accept, ends in a catch-all \"reject\"", firewall.Message, StringComparison.Ordinal);
        var allowed = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, allowed.Severity);
        Assert.Contains("inet firewalld filter_IN_public_allow rule \"tcp dport 8080 ct state { new, untracked } accept\"", allowed.Message, StringComparison.Ordinal);
        var dropped = report.Single("port", "tcp/9090");
        Assert.Equal(Severity.Problem, dropped.Severity);
        Assert.Contains("dropped by inet firewalld filter_INPUT rule \"reject\"", dropped.Message, StringComparison.Ordinal);
        Assert.Equal("allow it: firewall-cmd --permanent --add-port=9090/tcp && firewall-cmd --reload", dropped.Advice);

        // firewalld accepts 'ct status dnat' early: redirected flows get through, so Redirect would work here.
        var redirect = Analyze(Shape("firewalld-like-allows-8080"), steering: Steering.Redirect).Single("private-ports");
        Assert.Equal(Severity.Ok, redirect.Severity);
        Assert.Contains("ct status dnat accept", redirect.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Docker_nat_chains_tie_with_the_redirect_steering_and_are_only_information_with_tproxy()
    {
        var tproxy = Analyze(Shape("docker-publishes-9000"));
        var redirect = Analyze(Shape("docker-publishes-9000"), steering: Steering.Redirect);

        Assert.Contains("chains DOCKER", tproxy.Single("firewall", "docker").Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Info, tproxy.Single("docker-nat-priority").Severity);
        var tie = redirect.Single("docker-nat-priority");
        Assert.Equal(Severity.Warning, tie.Severity);
        Assert.Contains("ip nat PREROUTING, ip nat OUTPUT run at priority -100", tie.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Warnings, redirect.ExitCode);

        // Docker publishes 9000, not 8080: nothing captures the service's port.
        tproxy.AssertNone("capture");
        Assert.Equal(Severity.Ok, tproxy.Single("port", "tcp/8080").Severity);
    }

    [Fact]
    public void Docker_publishing_the_port_captures_it_from_the_network_and_from_the_host()
    {
        var report = Analyze(Shape("docker-publishes-8080"));

        var capture = report.Single("capture", "tcp/8080");
        Assert.Equal(Severity.Problem, capture.Severity);
        Assert.Contains("Docker's ip nat DOCKER rule \"! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.51.100.2:80\"", capture.Message, StringComparison.Ordinal);
        Assert.Contains("network IPv4", capture.Message, StringComparison.Ordinal);
        Assert.Contains("local IPv4", capture.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("IPv6", capture.Message, StringComparison.Ordinal);
        Assert.Contains("a container publishes this port", capture.Advice, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Failure, report.ExitCode);
    }

    [Fact]
    public void Real_firewalld_accepts_the_added_port_in_its_zone_and_rejects_the_rest()
    {
        var report = Analyze(Shape("firewalld"), ports: [8080, 8081]);

        Assert.Contains("input: inet firewalld filter_INPUT policy accept", report.Single("firewall", "firewalld").Message, StringComparison.Ordinal);
        var allowed = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Ok, allowed.Severity);
        Assert.Contains("inet firewalld filter_IN_public_allow rule \"tcp dport 8080 accept\"", allowed.Message, StringComparison.Ordinal);
        var rejected = report.Single("port", "tcp/8081");
        Assert.Equal(Severity.Problem, rejected.Severity);
        Assert.Contains("dropped by inet firewalld filter_IN_public rule \"reject\"", rejected.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Ok, Analyze(Shape("firewalld"), steering: Steering.Redirect).Single("private-ports").Severity);
    }

    [Fact]
    public void Docker_28_next_to_a_default_deny_input_captures_only_the_port_it_publishes()
    {
        var report = Analyze(Shape("docker28"), ports: [8080, 8081]);

        Assert.Contains("chains DOCKER", report.Single("firewall", "docker").Message, StringComparison.Ordinal);
        Assert.Contains("ip raw", report.Single("firewall", "docker").Message, StringComparison.Ordinal);

        // The default-deny INPUT next to Docker's chains is the host's own.
        Assert.Contains("input: ip filter INPUT policy drop, ip6 filter INPUT policy drop", report.Single("firewall", "iptables").Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Ok, report.Single("port", "tcp/8080").Severity);
        var capture = report.Single("capture", "tcp/8081");
        Assert.Equal(Severity.Problem, capture.Severity);
        Assert.Contains("-j DNAT --to-destination 198.51.100.2:80", capture.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Warning, Analyze(Shape("docker28"), steering: Steering.Redirect).Single("docker-nat-priority").Severity);
    }

    [Fact]
    public void A_foreign_redirect_on_the_port_is_a_problem_on_every_path_it_captures()
    {
        var report = Analyze(Shape("foreign-redirect-8080"));

        var captures = report.Findings.Where(f => f.Check == "capture").ToList();
        Assert.Equal(2, captures.Count);
        Assert.All(captures, c => Assert.Equal(Severity.Problem, c.Severity));
        Assert.Contains(captures, c => c.Message.Contains("ip transparent_proxy prerouting rule \"tcp dport 8080 redirect to :3128\"", StringComparison.Ordinal)
            && c.Message.Contains("(network IPv4)", StringComparison.Ordinal));
        Assert.Contains(captures, c => c.Message.Contains("ip transparent_proxy output rule", StringComparison.Ordinal)
            && c.Message.Contains("(local IPv4)", StringComparison.Ordinal));

        // Another port is not captured.
        Analyze(Shape("foreign-redirect-8080"), ports: [9090]).AssertNone("capture");
    }

    [Fact]
    public void Notrack_on_the_port_and_a_drop_in_prerouting_are_reported()
    {
        var report = Analyze(Shape("notrack-and-prerouting-drop-8080"));
        var redirect = Analyze(Shape("notrack-and-prerouting-drop-8080"), steering: Steering.Redirect);

        var notrack = report.Single("notrack", "tcp/8080");
        Assert.Equal(Severity.Warning, notrack.Severity);
        Assert.Contains("inet tuning raw_prerouting rule \"tcp dport 8080 notrack\"", notrack.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Problem, redirect.Single("notrack", "tcp/8080").Severity);
        var drops = report.Findings.Where(f => f.Check == "prerouting-drop").ToList();
        Assert.Equal(2, drops.Count);
        Assert.All(drops, d => Assert.Contains("IPv6 clients", d.Message, StringComparison.Ordinal));
        Assert.Contains("inet tuning prerouting rule \"meta nfproto ipv6 tcp dport 8080 drop\"", drops[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_namespace_table_decides_the_steering_and_must_point_at_the_live_active_generation()
    {
        var facts = Shape("switchover-redirect-behind-nft-drop") with { Namespace = Namespace(1, 8080, 40635) };

        var report = Analyze(facts, ports: [], ns: "echo");

        Assert.Equal("redirect", report.Steering);
        Assert.Equal("table", report.SteeringSource);
        Assert.Equal([8080], report.Ports);
        Assert.Equal(Severity.Ok, report.Single("namespace", "echo").Severity);
        var table = report.Single("namespace-table", "echo");
        Assert.Equal(Severity.Ok, table.Severity);
        Assert.Contains("steers tcp/8080 -> :40635 (Redirect) to the active generation 1", table.Message, StringComparison.Ordinal);
        var privatePorts = report.Single("private-ports");
        Assert.Equal(Severity.Problem, privatePorts.Severity);
        Assert.Contains("the private port :40635", privatePorts.Message, StringComparison.Ordinal);

        // Our own table is not a foreign capture, and not a firewall.
        report.AssertNone("capture");
        Assert.DoesNotContain(report.Findings, f => f.Check == "firewall" && f.Subject == "switchover");
    }

    [Fact]
    public void A_dead_active_generation_or_a_table_pointing_elsewhere_is_a_problem()
    {
        var facts = Shape("switchover-redirect-behind-nft-drop");

        var dead = Analyze(facts with { Namespace = Namespace(1, 8080, 40635, alive: false) }, ns: "echo");
        var elsewhere = Analyze(facts with { Namespace = Namespace(2, 8080, 41000) }, ns: "echo");
        var stale = Analyze(facts with { Namespace = Namespace(1, 8080, 40635) with { State = null } }, ns: "echo");

        Assert.Equal(Severity.Problem, dead.Single("namespace", "echo").Severity);
        Assert.Contains("its process is gone", dead.Single("namespace", "echo").Message, StringComparison.Ordinal);
        var table = elsewhere.Single("namespace-table", "echo");
        Assert.Equal(Severity.Problem, table.Severity);
        Assert.Contains("tcp/8080 goes to :40635, not to :41000", table.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Warning, stale.Single("namespace", "echo").Severity);
        Assert.Equal("switchover cleanup --namespace echo", stale.Single("namespace", "echo").Advice);
    }

    [Fact]
    public void A_tproxy_table_behind_a_drop_policy_that_allows_the_public_port_is_all_ok()
    {
        var facts = Shape("switchover-tproxy-behind-nft-drop") with { Namespace = Namespace(2, 8080, 40701) };

        var report = Analyze(facts, ports: [], ns: "echo");

        Assert.Equal("tproxy", report.Steering);
        Assert.Contains("steers tcp/8080 -> :40701 (Tproxy)", report.Single("namespace-table", "echo").Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Ok, report.Single("port", "tcp/8080").Severity);
        Assert.Equal(Severity.Info, report.Single("private-ports").Severity);
        report.AssertNone("capture");
        Assert.Equal(ExitCodes.Success, report.ExitCode);
    }

    [Fact]
    public void A_tproxy_table_with_a_port_map_is_read_for_every_public_port_and_each_port_is_checked()
    {
        var facts = Shape("switchover-tproxy-map-behind-nft-drop") with
        {
            Namespace = Namespace(3, [new State.PortMapping(8080, 40801), new State.PortMapping(8443, 40802)]),
        };

        var report = Analyze(facts, ports: [], ns: "echo");

        Assert.Equal([8080, 8443], report.Ports);
        Assert.Equal("tproxy", report.Steering);
        var table = report.Single("namespace-table", "echo");
        Assert.Equal(Severity.Ok, table.Severity);
        Assert.Contains("steers tcp/8080 -> :40801, tcp/8443 -> :40802 (Tproxy)", table.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Ok, report.Single("port", "tcp/8080").Severity);
        Assert.Equal(Severity.Problem, report.Single("port", "tcp/8443").Severity);

        // A map only captures its keys: another namespace's map on 8080 and 8443 says nothing about 9090.
        Analyze(Shape("switchover-tproxy-map-behind-nft-drop"), ports: [9090], ns: "shop").AssertNone("namespace");
        Assert.Equal(Severity.Problem, Analyze(Shape("switchover-tproxy-map-behind-nft-drop"), ports: [8443], ns: "shop").Single("namespace", "echo").Severity);
    }

    [Fact]
    public void Another_namespace_steering_the_same_port_is_a_conflict()
    {
        var report = Analyze(Shape("switchover-tproxy-behind-nft-drop"), ns: "shop");
        var any = Analyze(Shape("switchover-tproxy-behind-nft-drop"));

        var conflict = report.Findings.Single(f => f.Check == "namespace" && f.Subject == "echo");
        Assert.Equal(Severity.Problem, conflict.Severity);
        Assert.Contains("already steered by namespace 'echo'", conflict.Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Info, any.Single("namespace", "echo").Severity);
    }

    [Fact]
    public void Iptables_legacy_tables_are_read_from_iptables_legacy_save()
    {
        var report = Analyze(Shape("iptables-legacy-allows-22"));
        var blind = Analyze(Shape("iptables-legacy-allows-22") with { IptablesLegacy = null });

        Assert.Equal(Severity.Info, report.Single("iptables-legacy", "ip").Severity);
        var port = report.Single("port", "tcp/8080");
        Assert.Equal(Severity.Problem, port.Severity);
        Assert.Contains("IPv4: dropped by ip filter (iptables-legacy) INPUT (policy drop); IPv6: allowed", port.Message, StringComparison.Ordinal);
        Assert.Equal("allow it: iptables-legacy -I INPUT -p tcp --dport 8080 -j ACCEPT", port.Advice);
        Assert.Equal(Severity.Ok, Analyze(Shape("iptables-legacy-allows-22"), ports: [22]).Single("port", "tcp/22").Severity);
        Assert.Equal(Severity.Warning, blind.Single("iptables-legacy", "ip").Severity);
    }

    [Fact]
    public void Without_a_port_the_port_checks_are_skipped_and_said_so()
    {
        var report = Analyze(Shape("nft-drop-allows-22"), ports: []);

        var port = report.Single("port");
        Assert.Equal(Severity.Info, port.Severity);
        Assert.Null(port.Subject);
        Assert.Equal(ExitCodes.Success, report.ExitCode);
    }

    [Fact]
    public void An_unreadable_ruleset_is_a_problem_that_says_what_to_do()
    {
        var report = Analyze(Healthy with { RulesetJson = null, RulesetError = "'nft -j list ruleset' exited with 1: Operation not permitted" });

        var ruleset = report.Single("ruleset");
        Assert.Equal(Severity.Problem, ruleset.Severity);
        Assert.Contains("Operation not permitted", ruleset.Message, StringComparison.Ordinal);
        Assert.Contains("CAP_NET_ADMIN", ruleset.Advice, StringComparison.Ordinal);
        report.AssertNone("firewall");
    }

    [Fact]
    public void The_text_form_has_one_line_per_finding_and_the_json_form_the_same_findings()
    {
        var report = Analyze(Shape("nft-drop-allows-22"));

        var lines = DoctorText.Render(report).TrimEnd('\n').Split('\n');
        Assert.Equal(report.Findings.Count + 1, lines.Length);
        Assert.StartsWith("problem port tcp/8080: from the network, IPv4 and IPv6: dropped by", lines.Single(l => l.StartsWith("problem", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Contains(" -> allow it: nft insert rule", DoctorText.Render(report), StringComparison.Ordinal);
        Assert.Equal("1 problem(s), 0 warning(s), 3 info, 4 ok", lines[^1]);

        using var json = System.Text.Json.JsonDocument.Parse(DoctorJson.Serialize(report));
        var root = json.RootElement;
        Assert.Equal(1, root.GetProperty("exitCode").GetInt32());
        Assert.Equal(1, root.GetProperty("counts").GetProperty("problem").GetInt32());
        var problem = root.GetProperty("findings").EnumerateArray().Single(f => f.GetProperty("severity").GetString() == "problem");
        Assert.Equal("port", problem.GetProperty("check").GetString());
        Assert.Equal("tcp/8080", problem.GetProperty("subject").GetString());
    }
}
