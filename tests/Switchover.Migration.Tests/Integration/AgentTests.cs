using System.Net.Sockets;
using System.Text.Json;
using Switchover.Lab;
using Switchover.Migration.Gre;
using Switchover.Migration.Tests.Agent;
using Switchover.Processes;

namespace Switchover.Migration.Tests.Integration;

/// <summary>`switchover tunnel` as a process in each namespace, and its control socket as other users see it.</summary>
[Collection(GreLabGroup.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class AgentTests : IDisposable
{
    private const int SigTerm = 15;
    private readonly string _directory = Directory.CreateTempSubdirectory("so-agent-").FullName;

    public AgentTests()
    {
        // Other users must reach the socket file to show that the socket itself turns them away.
        File.SetUnixFileMode(_directory, (UnixFileMode)0x1ED /* 0755 */);
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact(Timeout = 120_000)]
    public async Task Switchover_tunnel_run_carries_traffic_reports_counters_and_stops_cleanly_on_stop_and_on_SIGTERM()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetwork, key: null, CancellationToken.None, startTunnels: false);
        // A's dataplane is auto: what this kernel has (userspace here; kernel GRE on Debian's stock kernel). B's is userspace.
        var auto = (await GreSupport.DetectAsync(CancellationToken.None)).DataplaneFor(AddressFamily.InterNetwork) == GreDataplaneKind.Kernel
            ? "kernel" : "userspace";
        var socketA = Path.Combine(_directory, "a.sock");
        var socketB = Path.Combine(_directory, "b.sock");
        await using var agentA = lab.A.StartProcess("dotnet", [Switchover.Lab.Artifacts.Cli, "tunnel", "run", "--name", GreLab.TunnelName,
            "--local", GreLab.OuterA4.ToString(), "--remote", GreLab.OuterB4.ToString(), "--key", "0x2a", "--mark", "0x1", "--socket", socketA]);
        await using var agentB = lab.B.StartProcess("dotnet", [Switchover.Lab.Artifacts.Cli, "tunnel", "run", "--name", GreLab.TunnelName,
            "--local", GreLab.OuterB4.ToString(), "--remote", GreLab.OuterA4.ToString(), "--key", "42", "--socket", socketB, "--dataplane", "userspace"]);
        await agentA.WaitForOutputAsync($"tunnel {GreLab.TunnelName} up", TimeSpan.FromSeconds(30), CancellationToken.None);
        await agentB.WaitForOutputAsync($"tunnel {GreLab.TunnelName} up", TimeSpan.FromSeconds(30), CancellationToken.None);
        Assert.Contains(agentA.OutputLines, l => l.Contains($"using the {auto} dataplane", StringComparison.Ordinal));
        await lab.AddInnerAddressesAsync(CancellationToken.None);

        Assert.Equal(GreLab.InnerA4, await Traffic.TcpEchoAsync(lab.B, GreLab.InnerB4, lab.A, 100_000));
        Assert.Equal(GreLab.InnerB6, await Traffic.UdpRoundTripAsync(lab.A, GreLab.InnerA6, lab.B));

        var json = await lab.A.RunAsync("dotnet", [Switchover.Lab.Artifacts.Cli, "tunnel", "status", "--socket", socketA, "--json"], CancellationToken.None);
        using (var document = JsonDocument.Parse(json.StandardOutput))
        {
            var tunnel = document.RootElement.GetProperty("tunnels")[0];
            Assert.Equal(42u, tunnel.GetProperty("key").GetUInt32());
            Assert.Equal(1u, tunnel.GetProperty("firewallMark").GetUInt32());
            Assert.Equal("running", tunnel.GetProperty("state").GetString());
            var counters = tunnel.GetProperty("counters");
            Assert.True(counters.GetProperty("rxBytes").GetInt64() > 100_000, json.StandardOutput);
            Assert.True(counters.GetProperty("txPackets").GetInt64() > 10, json.StandardOutput);
            Assert.Equal(0, counters.GetProperty("rxDropped").GetInt64());
        }

        var human = await lab.A.RunAsync("dotnet", [Switchover.Lab.Artifacts.Cli, "tunnel", "status", "--socket", socketA], CancellationToken.None);
        Assert.Contains($"gre1  {auto}  GRE  198.51.100.1 -> 198.51.100.2  key 42  mtu 1472  mark 0x1  running", human.StandardOutput, StringComparison.Ordinal);

        var stop = await lab.B.RunAsync("dotnet", [Switchover.Lab.Artifacts.Cli, "tunnel", "stop", "--socket", socketB], CancellationToken.None);
        Assert.Contains("is stopping", stop.StandardOutput, StringComparison.Ordinal);
        Assert.Equal(0, await agentB.Exited.WaitAsync(TimeSpan.FromSeconds(20)));

        agentA.SendSignal(SigTerm);
        Assert.Equal(0, await agentA.Exited.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Contains(agentA.OutputLines, l => l.Contains("terminated by a signal; removing tunnel gre1", StringComparison.Ordinal));

        Assert.Empty(Directory.GetFileSystemEntries(_directory));
        foreach (var ns in new[] { lab.A, lab.B })
        {
            Assert.NotEqual(0, (await ns.TryRunAsync("ip", ["link", "show", "dev", GreLab.TunnelName], CancellationToken.None)).ExitCode);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Another_user_is_turned_away_by_the_file_mode_and_behind_it_by_the_peer_credentials()
    {
        Root.Require();
        var socket = Path.Combine(_directory, "tunnel.sock");
        await using (await TunnelAgent.StartAsync([new FakeDataplane("gre0")], socket, TextWriter.Null, CancellationToken.None))
        {
            // Mode 0600: connect(2) itself fails for anyone but the owner (and root).
            var denied = await StatusAsNobodyAsync(socket);
            Assert.Equal(1, denied.ExitCode);
            Assert.Contains("May not connect", denied.StandardError, StringComparison.Ordinal);
        }

        await using (await TunnelAgent.StartAsync([new FakeDataplane("gre0")], socket, TextWriter.Null, (UnixFileMode)0x1B6 /* 0666 */, CancellationToken.None))
        {
            // With the file open to all, SO_PEERCRED is what stops them.
            var refused = await StatusAsNobodyAsync(socket);
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains("permission denied: uid 65534 is neither root nor the agent's uid 0", refused.StandardError, StringComparison.Ordinal);

            var root = await CommandRunner.Instance.TryRunAsync(
                Command.Create("dotnet", Switchover.Lab.Artifacts.Cli, "tunnel", "status", "--socket", socket), CancellationToken.None);
            Assert.True(root.ExitCode == 0, root.StandardError);
            Assert.Contains("gre0  userspace", root.StandardOutput, StringComparison.Ordinal);
        }
    }

    private static Task<CommandResult> StatusAsNobodyAsync(string socket) =>
        CommandRunner.Instance.TryRunAsync(
            Command.Create("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                "dotnet", Switchover.Lab.Artifacts.Cli, "tunnel", "status", "--socket", socket) with
            {
                Environment = new Dictionary<string, string> { ["HOME"] = "/tmp", ["DOTNET_CLI_HOME"] = "/tmp" },
            },
            CancellationToken.None);
}
