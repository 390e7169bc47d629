using System.Net;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>One Switchover namespace name in several network namespaces: separate state, separate locks, no signals across.</summary>
public sealed class NetworkNamespaceIsolationTests(ITestOutputHelper output) : TestBase(output)
{
    private readonly string _name = "dup" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 3));

    [Fact(Timeout = 180_000)]
    public async Task The_same_namespace_in_two_network_namespaces_keeps_serving_in_both_and_neither_signals_the_other()
    {
        var a = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort, _name));
        var b = Track(new SwitchoverService(Lab.Client, Artifacts.TestServer, PublicPort, _name));
        var a1 = await a.DeployAsync("a1", TakeoverTimeout, Token);

        var b1 = await b.DeployAsync("b1", TakeoverTimeout, Token);
        var b2 = await b.DeployAsync("b2", TakeoverTimeout, Token);

        Assert.NotEqual(a.StateDirectory, b.StateDirectory);
        Assert.Equal(0, await ExitsWithinAsync(b1.Process, TimeSpan.FromSeconds(30)));
        Assert.False(a1.Process.HasExited, "Generation a1 was stopped by a deploy in another network namespace.");
        Assert.DoesNotContain("was superseded by generation", a1.Process.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("heard that it was superseded", a1.Process.Output, StringComparison.Ordinal);
        Assert.Equal($"a1 {a1.Process.Pid}", (await GetAsync(Lab.Server, new IPEndPoint(IPAddress.Loopback, PublicPort), "/", Token)).Body.Trim());
        Assert.Equal($"b2 {b2.Process.Pid}", (await GetAsync(Lab.Client, new IPEndPoint(IPAddress.Loopback, PublicPort), "/", Token)).Body.Trim());
        Assert.Equal([a1.Process.Pid], a.ReadState()!.Generations.Select(g => g.Pid));
        Assert.Equal([b2.Process.Pid], b.ReadState()!.Generations.Select(g => g.Pid));
        (await a.CheckInvariantAsync(Token)).ThrowIfViolated();
        (await b.CheckInvariantAsync(Token)).ThrowIfViolated();

        var status = await a.CliAsync(Token, "status", "--json");
        Assert.Contains($"\"pid\": {a1.Process.Pid}", status.StandardOutput, StringComparison.Ordinal);
        Assert.DoesNotContain($"\"pid\": {b2.Process.Pid}", status.StandardOutput, StringComparison.Ordinal);
    }

    [Fact(Timeout = 180_000)]
    public async Task The_state_of_a_deleted_network_namespace_is_removed_by_the_next_status()
    {
        var gone = await NetworkNamespace.CreateAsync("so-g", Token);
        var doomed = Track(new SwitchoverService(gone, Artifacts.TestServer, PublicPort, _name));
        var g1 = await doomed.DeployAsync("g1", TakeoverTimeout, Token);
        var goneDirectory = doomed.StateDirectory;
        g1.Process.Kill();
        await ExitsWithinAsync(g1.Process, TimeSpan.FromSeconds(10));
        await gone.DisposeAsync();
        Assert.True(Directory.Exists(goneDirectory));

        var status = await Service.CliAsync(Token, "status");

        Output.WriteLine(status.StandardOutput + status.StandardError);
        Assert.False(Directory.Exists(goneDirectory), $"{goneDirectory} outlived its network namespace.");
    }
}
