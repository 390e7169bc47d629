using System.Globalization;
using System.Net;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// Handoffs on a server whose host firewall is default-deny and allows only the public port, in the shapes real hosts
/// have (Firewalls/: nftables, ufw's and firewalld's own rulesets, Docker's chains). Nothing is opened for us.
/// </summary>
public sealed class FirewallTests(ITestOutputHelper output) : TestBase(output)
{
    private const int Handoffs = 3;

    public static TheoryData<FirewallShape> Shapes => [.. Enum.GetValues<FirewallShape>()];

    public static TheoryData<FirewallShape, ConnectionMode> ShapesAndModes
    {
        get
        {
            var data = new TheoryData<FirewallShape, ConnectionMode>();
            foreach (var shape in Enum.GetValues<FirewallShape>())
            {
                data.Add(shape, ConnectionMode.KeepAlive);
                data.Add(shape, ConnectionMode.NewConnectionPerRequest);
            }

            return data;
        }
    }

    private string OwnTable => "inet switchover_" + Service.Name;

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(ShapesAndModes))]
    public async Task Rolling_deploy_under_load_behind_a_default_deny_firewall_fails_no_request_and_leaves_the_firewall_byte_identical(FirewallShape shape, ConnectionMode mode)
    {
        await ApplyFirewallAsync(shape);
        var before = await HostFirewall.ForeignRulesetAsync(Lab.Server, OwnTable, Token);

        var generations = new List<LaunchedGeneration> { await Service.DeployAsync("v1", TakeoverTimeout, Token) };
        await using var load = HttpLoad.Start(AllPaths(), Load(mode, TimeSpan.FromMinutes(1)), Token);
        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        for (var version = 2; version <= Handoffs + 1; version++)
        {
            generations.Add(await Service.DeployAsync($"v{version}", TakeoverTimeout, Token));
            await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        }

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        var result = await load.StopAsync(Token);
        var during = await HostFirewall.ForeignRulesetAsync(Lab.Server, OwnTable, Token);

        var failedByPath = result.Failures.GroupBy(f => f.Target).Select(g => $"{g.Key} {g.Count()}");
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{shape}, {mode}: {result.TotalRequests} requests, {result.FailureCount} failed " +
            $"(recorded by path: {string.Join(", ", failedByPath.DefaultIfEmpty("none"))}), {Handoffs} handoffs"));
        AssertNoFailures(result);
        foreach (var target in AllPaths())
        {
            Assert.Contains(result.RecentResponses, r => r.Target == target.Name);
        }

        Assert.All(result.RecentResponses.TakeLast(100), r => Assert.Equal($"v{Handoffs + 1}", TextOf(r.Body)));
        Assert.Equal(before, during);

        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
        }

        generations[^1].Process.SendSignal(Signals.Terminate);
        Assert.Equal(0, await ExitsWithinAsync(generations[^1].Process, TimeSpan.FromSeconds(30)));
        Assert.Null(await Service.TableAsync(Token));
        Assert.Equal(before, await HostFirewall.ForeignRulesetAsync(Lab.Server, OwnTable, Token));
    }

    [Theory(Timeout = 60_000)]
    [MemberData(nameof(Shapes))]
    public async Task Behind_a_default_deny_firewall_the_private_port_gets_no_answer_from_the_network_while_the_public_port_does(FirewallShape shape)
    {
        await ApplyFirewallAsync(shape);
        await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var privatePort = Service.ReadState()!.Active!.Ports.Single().PrivatePort;

        foreach (var server in new[] { Lab.ServerV4, Lab.ServerV6 })
        {
            // The same probe that must get nothing from the private port gets an answer from the public one.
            var viaPublic = await HostFirewall.ProbeAsync(Lab.Client, new IPEndPoint(server, PublicPort), TimeSpan.FromSeconds(3), Token);
            var direct = await HostFirewall.ProbeAsync(Lab.Client, new IPEndPoint(server, privatePort), TimeSpan.FromSeconds(2), Token);
            Output.WriteLine($"{shape}: {server} port {PublicPort}: {viaPublic}; private port {privatePort}: {direct}");
            Assert.True(viaPublic == ProbeOutcome.Connected, $"{shape}: the public port {PublicPort} on {server} got {viaPublic} from the network.");
            Assert.True(direct != ProbeOutcome.Connected, $"{shape}: the private port {privatePort} on {server} accepted a connection from the network; it must be reachable only through the public port.");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task With_redirect_steering_a_default_deny_nftables_firewall_times_out_network_clients_while_localhost_still_works()
    {
        // Why TPROXY is the default: REDIRECT rewrites the destination to the private port before the input hook, so the
        // host firewall sees a port nobody allowed, and a drop in its base chain wins over any accept of ours.
        await ApplyFirewallAsync(FirewallShape.NftPolicyDrop);
        await Service.DeployAsync("v1", TakeoverTimeout, Token, ["--Switchover:Steering=Redirect"]);
        Assert.Contains("redirect to :", await Service.TableAsync(Token), StringComparison.Ordinal);

        foreach (var local in new[] { IPAddress.Loopback, IPAddress.IPv6Loopback })
        {
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(Token);
            bound.CancelAfter(TimeSpan.FromSeconds(10));
            var (status, body) = await GetAsync(Lab.Server, new IPEndPoint(local, PublicPort), "/", bound.Token);
            Assert.Equal(200, status);
            Assert.Equal("v1", TextOf(body));
        }

        foreach (var server in new[] { Lab.ServerV4, Lab.ServerV6 })
        {
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(Token);
            bound.CancelAfter(TimeSpan.FromSeconds(3));
            var error = await Record.ExceptionAsync(() => GetAsync(Lab.Client, new IPEndPoint(server, PublicPort), "/", bound.Token));
            Assert.True(
                error is OperationCanceledException && !Token.IsCancellationRequested,
                $"A network client of {server}:{PublicPort} should time out under Redirect behind a policy-drop firewall, got {error?.GetType().Name ?? "an answer"}: {error?.Message}");
        }
    }

    private async Task ApplyFirewallAsync(FirewallShape shape)
    {
        await HostFirewall.ApplyAsync(Lab.Server, shape, Token);
        await HostFirewall.EnsureDefaultDenyAsync(shape, Lab.Server, Lab.Client, [Lab.ServerV4, Lab.ServerV6], Token);
    }
}
