using System.Net;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

public sealed class RecoveryAndBadInputTests(ITestOutputHelper output) : TestBase(output)
{
    [Fact(Timeout = 180_000)]
    public async Task After_a_crash_the_next_start_takes_over_and_cleanup_restores_the_ruleset_exactly()
    {
        await Lab.Server.RunAsync("nft", ["add", "table", "inet", "bystander"], Token);
        await Lab.Server.RunAsync("nft", ["add", "chain", "inet", "bystander", "input", "{ type filter hook input priority 5; policy accept; }"], Token);
        var before = await Service.RulesetAsync(Token);

        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        v1.Process.Kill();
        Assert.Equal(128 + Signals.Kill, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(10)));
        Assert.Equal(v1.Process.Pid, Service.ReadState()!.Active!.Pid);

        var v2 = await Service.DeployAsync("v2", TakeoverTimeout, Token);
        Assert.Contains($"Removed 1 stale generation(s) whose process is gone: 1 (pid {v1.Process.Pid})", v2.Process.Output, StringComparison.Ordinal);
        Assert.Equal($"v2 {v2.Process.Pid}", (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim());

        var refused = await Service.CliAsync(Token, "cleanup", "--namespace", Service.Name);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("--force", refused.StandardError, StringComparison.Ordinal);
        Assert.NotNull(await Service.TableAsync(Token));

        v2.Process.Kill();
        await ExitsWithinAsync(v2.Process, TimeSpan.FromSeconds(10));
        var cleanup = await Service.CliAsync(Token, "cleanup", "--namespace", Service.Name);
        Assert.True(cleanup.ExitCode == 0, cleanup.StandardError);

        Assert.Equal(before, await Service.RulesetAsync(Token));
        Assert.False(Directory.Exists(Service.StateDirectory));
    }

    [Fact(Timeout = 180_000)]
    public async Task Status_reports_generations_ports_and_live_connections()
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var slow = GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/?delay=4000", Token);
        await Task.Delay(500, Token);

        var status = await Service.CliAsync(Token, "status", "--namespace", Service.Name, "--json");
        Assert.True(status.ExitCode == 0, status.StandardError);
        using var json = System.Text.Json.JsonDocument.Parse(status.StandardOutput);
        var ns = json.RootElement.GetProperty("namespaces")[0];
        Assert.Equal(PublicPort, ns.GetProperty("publicEndpoints")[0].GetProperty("port").GetInt32());
        var generation = ns.GetProperty("generations")[0];
        Assert.Equal(v1.Process.Pid, generation.GetProperty("pid").GetInt32());
        Assert.Equal("active", generation.GetProperty("state").GetString());
        Assert.True(generation.GetProperty("ports")[0].GetProperty("connections").GetProperty("established").GetInt32() >= 1);

        var human = await Service.CliAsync(Token, "status", "--namespace", Service.Name);
        Assert.Contains($"namespace {Service.Name}", human.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("active", human.StandardOutput, StringComparison.Ordinal);
        Assert.Equal(200, (await slow).Status);
    }

    [Fact(Timeout = 120_000)]
    public async Task Disabled_mode_binds_the_configured_endpoint_directly_and_changes_no_rule()
    {
        var before = await Service.RulesetAsync(Token);
        var app = Service.Launch("direct", ["--Switchover:Mode=Disabled"]);
        await app.WaitForOutputAsync("Now listening on: http://[::]:8080", TimeSpan.FromSeconds(30), Token);

        var (status, body) = await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token);

        Assert.Equal(200, status);
        Assert.Equal($"direct {app.Pid}", body.Trim());
        Assert.Contains("Switchover is disabled", app.Output, StringComparison.Ordinal);
        Assert.Equal(before, await Service.RulesetAsync(Token));
        Assert.False(Directory.Exists(Service.StateDirectory));
    }

    [Fact(Timeout = 240_000)]
    public async Task Bad_input_gives_a_clear_error_and_changes_nothing()
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(3)), Token);
        var ruleset = await Service.RulesetAsync(Token);
        var state = File.ReadAllText(Path.Combine(Service.StateDirectory, "state.json"));

        await FailsWithAsync(["--Switchover:Namespace=x\"; flush ruleset"], "A namespace may contain only [a-z0-9_-]");
        await FailsWithAsync(["--urls", "http://0.0.0.0:70000"], "An endpoint's port is out of range: use a port in 1-65535");
        await FailsWithAsync(["--urls", "http://0.0.0.0:0"], "A public endpoint needs a fixed port");
        // The nft program is used only when named; named and missing, the error says to install it.
        await FailsWithAsync(["--Switchover:NftPath=nft"], "nft was not found. Install nftables", new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin" });
        await FailsWithAsync(["--Switchover:StateDirectory=/proc/switchover"], "Cannot create the state directory /proc/switchover/");

        var statePath = Path.Combine(Service.StateDirectory, "state.json");
        File.WriteAllText(statePath, "{ \"version\": 1, \"generations\": [ {");
        try
        {
            await FailsWithAsync([], $"The state file {statePath} is corrupt");
            Assert.Equal("{ \"version\": 1, \"generations\": [ {", File.ReadAllText(statePath));
        }
        finally
        {
            File.WriteAllText(statePath, state);
        }

        var invalidCli = await Service.CliAsync(Token, "cleanup", "--namespace", "x\"; flush ruleset");
        Assert.Equal(2, invalidCli.ExitCode);
        Assert.Contains("[a-z0-9_-]", invalidCli.StandardError, StringComparison.Ordinal);

        Assert.Equal(ruleset, await Service.RulesetAsync(Token));
        Assert.Equal(state, File.ReadAllText(statePath));
        Assert.False(Directory.Exists("/proc/switchover"));
        AssertNoFailures(await load.StopAsync(Token));
        Assert.Equal([$"v1 {v1.Process.Pid}\n"], (await load.StopAsync(Token)).Bodies.Keys);

        async Task FailsWithAsync(string[] arguments, string message, Dictionary<string, string>? environment = null)
        {
            var process = Service.Launch("bad", arguments, environment: environment);
            var exitCode = await ExitsWithinAsync(process, TimeSpan.FromSeconds(60));
            Output.WriteLine($"--- {string.Join(' ', arguments)} exited {exitCode}:\n{process.Output}");
            Assert.Equal(1, exitCode);
            Assert.Contains(message, process.Output, StringComparison.Ordinal);
            Assert.Equal(ruleset, await Service.RulesetAsync(Token));
        }
    }
}
