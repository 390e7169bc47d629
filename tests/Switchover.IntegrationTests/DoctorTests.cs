using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// The built CLI's <c>switchover doctor --json</c>, run inside the lab's server namespace with each firewall shape
/// loaded there (tests/Switchover.Tests/Doctor/Shapes, some of them loading the real rulesets of tests/Switchover.Lab/Firewalls/): it
/// reports what the test set up, what it says about the port matches what a client on the network gets, and it
/// changes nothing.
/// </summary>
public sealed partial class DoctorTests(ITestOutputHelper output) : TestBase(output)
{
    private static readonly TimeSpan ProbeBound = TimeSpan.FromSeconds(2);

    /// <summary>shape, the finding to expect (check, subject, severity, a fragment of its message), doctor's exit code.</summary>
    public static TheoryData<string, string, string?, string, string, int> Shapes => new()
    {
        { "nft-drop-allows-8080", "firewall", "nftables", "info", "inet host_fw input policy drop", 0 },
        { "nft-policy-drop", "port", "tcp/8080", "ok", "accepted by inet host_fw input rule \"tcp dport 8080 accept\"", 0 },
        { "nft-drop-allows-22", "port", "tcp/8080", "problem", "dropped by inet host_fw input (policy drop)", 1 },
        { "nft-drop-without-lo", "loopback", null, "problem", "the readiness request of a new generation to its own private port", 1 },
        { "iptables-allows-8080", "port", "tcp/8080", "ok", "accepted by ip filter INPUT rule", 0 },
        { "ufw-allows-8080", "port", "tcp/8080", "ok", "ip filter ufw-user-input rule \"tcp dport 8080 accept\"", 0 },
        { "ufw-fixture", "firewall", "ufw", "info", "ip filter INPUT policy drop, ip6 filter INPUT policy drop", 0 },
        { "firewalld", "port", "tcp/8080", "ok", "inet firewalld filter_IN_public_allow rule \"tcp dport 8080 accept\"", 0 },
        { "docker28", "docker-nat-priority", null, "info", "Docker's nat chains run at priority -100", 0 },
        { "docker-publishes-8080", "capture", "tcp/8080", "problem", "-j DNAT --to-destination 198.51.100.2:80", 1 },
        { "foreign-redirect-8080", "capture", "tcp/8080", "problem", "redirect to :3128", 1 },
    };

    [Fact(Timeout = 120_000)]
    public async Task On_a_clean_namespace_doctor_reports_everything_ok_and_exits_0()
    {
        var (exitCode, report) = await DoctorAsync("--port", "8080");

        Assert.Equal(0, exitCode);
        foreach (var finding in report.GetProperty("findings").EnumerateArray())
        {
            Assert.True(finding.GetProperty("severity").GetString() is "ok" or "info", finding.ToString());
        }

        Assert.Equal("ok", Find(report, "firewall", null).GetProperty("severity").GetString());
        Assert.Equal("ok", Find(report, "port", "tcp/8080").GetProperty("severity").GetString());
        Assert.Equal("ok", Find(report, "privileges", null).GetProperty("severity").GetString());
        Assert.Equal(ConnectResult.Connected, await ListenAndProbeAsync(Lab.ServerV4));
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Shapes))]
    public async Task Doctor_reports_what_each_firewall_shape_does_and_changes_nothing(
        string shape, string check, string? subject, string severity, string fragment, int expectedExitCode)
    {
        await ApplyAsync(shape);
        var before = await RulesAsync();

        var (exitCode, report) = await DoctorAsync("--port", "8080");

        var findings = report.GetProperty("findings").EnumerateArray()
            .Where(f => f.GetProperty("check").GetString() == check && (subject is null || f.GetProperty("subject").GetString() == subject)).ToList();
        Assert.Contains(findings, f => f.GetProperty("severity").GetString() == severity
            && f.GetProperty("message").GetString()!.Contains(fragment, StringComparison.Ordinal));
        Assert.Equal(expectedExitCode, exitCode);
        Assert.Equal(expectedExitCode, report.GetProperty("exitCode").GetInt32());
        Assert.Equal(before, await RulesAsync());

        // What doctor says about the port is what a client on the network gets: a listener on 8080 answers over
        // IPv4 and IPv6 exactly when the port is allowed and nothing captures it.
        var allowed = Find(report, "port", "tcp/8080").GetProperty("severity").GetString() == "ok"
            && !report.GetProperty("findings").EnumerateArray().Any(f => f.GetProperty("check").GetString() == "capture"
                && f.GetProperty("severity").GetString() == "problem" && f.GetProperty("message").GetString()!.Contains("network IPv", StringComparison.Ordinal));
        foreach (var address in new[] { Lab.ServerV4, Lab.ServerV6 })
        {
            var outcome = await ListenAndProbeAsync(address);
            Output.WriteLine($"{shape}: {address} port 8080 -> {outcome}");
            if (address.AddressFamily == AddressFamily.InterNetworkV6 && shape is "docker-publishes-8080" or "foreign-redirect-8080")
            {
                // Those shapes capture IPv4 only; doctor says so ("network IPv4").
                Assert.Equal(ConnectResult.Connected, outcome);
                continue;
            }

            Assert.Equal(allowed, outcome == ConnectResult.Connected);
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task With_a_namespace_doctor_checks_its_live_generation_and_predicts_what_network_clients_get()
    {
        await ApplyAsync("nft-drop-allows-8080");
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);

        var (exitCode, report) = await DoctorAsync("--namespace", Service.Name);

        Assert.Equal([PublicPort], report.GetProperty("ports").EnumerateArray().Select(p => p.GetInt32()));
        Assert.Equal("table", report.GetProperty("steeringSource").GetString());
        var ns = Find(report, "namespace", Service.Name);
        Assert.Equal("ok", ns.GetProperty("severity").GetString());
        Assert.Contains($"(pid {v1.Process.Pid}) is active and running", ns.GetProperty("message").GetString(), StringComparison.Ordinal);
        var table = Find(report, "namespace-table", Service.Name);
        Assert.Equal("ok", table.GetProperty("severity").GetString());
        var privatePort = Service.ReadState()!.Active!.Ports[0].PrivatePort;
        Assert.Contains($"tcp/8080 -> :{privatePort}", table.GetProperty("message").GetString(), StringComparison.Ordinal);

        // The steering the table shows decides whether this firewall lets network clients in; doctor must say which.
        var outcome = await ConnectAsync(new IPEndPoint(Lab.ServerV4, PublicPort));
        if (report.GetProperty("steering").GetString() == "redirect")
        {
            var privatePorts = Find(report, "private-ports", "tcp/8080");
            Assert.Equal("problem", privatePorts.GetProperty("severity").GetString());
            Assert.Contains($"the private port :{privatePort}", privatePorts.GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.Equal(1, exitCode);
            Assert.Equal(ConnectResult.TimedOut, outcome);
        }
        else
        {
            Assert.Equal("tproxy", report.GetProperty("steering").GetString());
            Assert.Equal("ok", Find(report, "port", "tcp/8080").GetProperty("severity").GetString());
            Assert.Equal(0, exitCode);
            Assert.Equal(ConnectResult.Connected, outcome);
        }

        // A generation that died without cleaning up: its table now steers into nothing.
        v1.Process.Kill();
        await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(10));
        var (deadExit, dead) = await DoctorAsync("--namespace", Service.Name);
        var gone = Find(dead, "namespace", Service.Name);
        Assert.Equal("problem", gone.GetProperty("severity").GetString());
        Assert.Contains("its process is gone", gone.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, deadExit);

        var cleanup = await Service.CliAsync(Token, "cleanup", "--namespace", Service.Name);
        Assert.True(cleanup.ExitCode == 0, cleanup.StandardError);
    }

    [Fact(Timeout = 120_000)]
    public async Task The_human_form_prints_one_line_per_finding_and_the_same_exit_code()
    {
        await ApplyAsync("nft-drop-allows-22");

        var human = await Service.CliAsync(Token, "doctor", "--port", "8080");
        var (exitCode, report) = await DoctorAsync("--port", "8080");

        Output.WriteLine(human.StandardOutput);
        Assert.Equal(exitCode, human.ExitCode);
        var lines = human.StandardOutput.TrimEnd('\n').Split('\n');
        Assert.Equal(report.GetProperty("findings").GetArrayLength() + 1, lines.Length);
        Assert.Contains(lines, l => l.StartsWith("problem port tcp/8080: ", StringComparison.Ordinal)
            && l.Contains("-> allow it: nft insert rule inet host_fw input tcp dport 8080 accept", StringComparison.Ordinal));
        Assert.Empty(human.StandardError);
    }

    /// <summary>Runs a shape script of tests/Switchover.Tests/Doctor/Shapes inside the server namespace.</summary>
    private async Task ApplyAsync(string shape)
    {
        var script = Path.Combine(Artifacts.RepositoryRoot, "tests", "Switchover.Tests", "Doctor", "Shapes", shape + ".sh");
        Assert.True(File.Exists(script), $"No firewall shape {script}.");
        await Lab.Server.RunAsync("sh", ["-e", script], Token);
    }

    private async Task<(int ExitCode, JsonElement Report)> DoctorAsync(params string[] arguments)
    {
        var result = await Service.CliAsync(Token, ["doctor", "--json", .. arguments]);
        Output.WriteLine($"doctor {string.Join(' ', arguments)} exited {result.ExitCode}:\n{result.StandardOutput}{result.StandardError}");
        Assert.Empty(result.StandardError);
        using var json = JsonDocument.Parse(result.StandardOutput);
        return (result.ExitCode, json.RootElement.Clone());
    }

    private static JsonElement Find(JsonElement report, string check, string? subject)
    {
        var found = report.GetProperty("findings").EnumerateArray()
            .Where(f => f.GetProperty("check").GetString() == check && (subject is null || f.GetProperty("subject").GetString() == subject))
            .ToList();
        Assert.True(found.Count == 1, $"Expected one '{check}' finding{(subject is null ? "" : " about " + subject)}, got {found.Count}: {report}");
        return found[0];
    }

    /// <summary>Every rule of the namespace, nft's view (counters dropped) and iptables', to compare before and after.</summary>
    private async Task<string> RulesAsync()
    {
        var nft = await Lab.Server.RunAsync("nft", ["-s", "list", "ruleset"], Token);
        var v4 = await Lab.Server.RunAsync("iptables-save", [], Token);
        var v6 = await Lab.Server.RunAsync("ip6tables-save", [], Token);
        return string.Join("\n--\n", new[] { nft.StandardOutput, v4.StandardOutput, v6.StandardOutput }.Select(WithoutDumpDates));
    }

    // Chain counters ([packets:bytes]) move with traffic (IPv6 neighbour discovery); the rules must not.
    private static string WithoutDumpDates(string text) => Counters().Replace(
        string.Join('\n', text.Split('\n').Where(l => !l.StartsWith("# Generated by", StringComparison.Ordinal) && !l.StartsWith("# Completed on", StringComparison.Ordinal))),
        "[0:0]");

    [GeneratedRegex(@"\[\d+:\d+\]")]
    private static partial Regex Counters();

    /// <summary>A listener on 8080 of the server (both families), and one connection attempt to it from the client.</summary>
    private async Task<ConnectResult> ListenAndProbeAsync(IPAddress address)
    {
        using var listener = Lab.Server.CreateSocket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        listener.DualMode = true;
        listener.Bind(new IPEndPoint(IPAddress.IPv6Any, PublicPort));
        listener.Listen();
        return await ConnectAsync(new IPEndPoint(address, PublicPort));
    }

    private async Task<ConnectResult> ConnectAsync(IPEndPoint to)
    {
        using var socket = Lab.Client.CreateSocket(to.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(Token);
        bound.CancelAfter(ProbeBound);
        try
        {
            await socket.ConnectAsync(to, bound.Token);
            return ConnectResult.Connected;
        }
        catch (SocketException)
        {
            return ConnectResult.Rejected;
        }
        catch (OperationCanceledException) when (!Token.IsCancellationRequested)
        {
            return ConnectResult.TimedOut;
        }
    }

    /// <summary>What one connection attempt got.</summary>
    public enum ConnectResult
    {
        Connected,
        Rejected,
        TimedOut,
    }
}
