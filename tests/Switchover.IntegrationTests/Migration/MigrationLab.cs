using System.Net;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.IntegrationTests.Migration;

/// <summary>What the migration tests do alike on the four-host lab: each host's state, the CLI there, the tunnels.</summary>
internal static class MigrationLab
{
    public const uint Key = 4242;
    public const string Tunnel = "gre-sw";

    /// <summary>Each lab host keeps its own state, as separate machines would (the namespaces share one file system).</summary>
    public static string StateDirectory(NetworkNamespace host) => $"/run/switchover/.lab-{host.Name}";

    // 300 s: a CLI run takes a second here, but minutes in the VM lab (TCG) on a busy machine (a setup took over 120 s
    // at a load average of 40: dotnet's start and each of the dozens of ip, sysctl and nft runs are emulated).
    public static Task<CommandOutput> CliAsync(NetworkNamespace host, string[] arguments, CancellationToken cancellationToken) =>
        host.TryRunAsync("dotnet", [Artifacts.Cli, .. arguments, "--state-dir", StateDirectory(host)], cancellationToken, TimeSpan.FromSeconds(300));

    /// <summary>Deletes what the hosts' state directories still hold, then the lab.</summary>
    public static async Task DisposeAsync(FourHostLab lab)
    {
        try
        {
            foreach (var host in lab.Hosts.Where(h => Directory.Exists(StateDirectory(h))))
            {
                Directory.Delete(StateDirectory(host), recursive: true);
            }
        }
        finally
        {
            await lab.DisposeAsync();
        }
    }

    /// <summary>
    /// Userspace GRE in this process between the old and the new host's outer IPv4 addresses: the old host's own
    /// address, or <paramref name="oldOuter"/> (another address of the old host's); plain GRE, or GRE in UDP.
    /// </summary>
    public static async Task<Tunnels> StartTunnelsAsync(FourHostLab lab, CancellationToken cancellationToken, IPAddress? oldOuter = null,
        TunnelEncapsulation encapsulation = TunnelEncapsulation.Gre)
    {
        oldOuter ??= lab.OldV4;
        var old = await UserspaceGreTunnel.StartAsync(new TunnelOptions
        {
            Name = Tunnel, Local = oldOuter, Remote = lab.NewV4, Key = Key, Mtu = 1472, NetworkNamespace = lab.Old.Name, Encapsulation = encapsulation,
        }, cancellationToken);
        try
        {
            var @new = await UserspaceGreTunnel.StartAsync(new TunnelOptions
            {
                Name = Tunnel, Local = lab.NewV4, Remote = oldOuter, Key = Key, Mtu = 1472, NetworkNamespace = lab.New.Name, Encapsulation = encapsulation,
            }, cancellationToken);
            return new Tunnels(old, @new);
        }
        catch
        {
            await old.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Starts <c>migrate finalize --watch</c> on the new host (one direct packet, 1 s quiet, 120 s bound) and proves it
    /// waits while the moved tuple tcp/192.0.2.1:25 is still reached through the tunnel (where <paramref name="service"/> greets).
    /// </summary>
    public static async Task<LabProcess> StartFinalizeWatchAsync(FourHostLab lab, string name, string service, CancellationToken cancellationToken)
    {
        var watch = lab.New.StartProcess("dotnet", [Artifacts.Cli, "migrate", "finalize", "--name", name, "--watch", "--direct-packets", "1",
            "--quiet", "1s", "--timeout", "120s", "--state-dir", StateDirectory(lab.New)]);
        try
        {
            using (var viaTunnel = await LineClient.ConnectAsync(lab.Peer, new IPEndPoint(lab.OldV4, 25), cancellationToken))
            {
                Assert.StartsWith($"{service} sees {lab.PeerV4}:", await viaTunnel.ReadLineAsync(cancellationToken), StringComparison.Ordinal);
            }

            await Task.Delay(TimeSpan.FromSeconds(3), cancellationToken);
            Assert.False(watch.HasExited, "finalize --watch finalized while the IP was still routed to the old host:\n" + watch.Output);
            return watch;
        }
        catch
        {
            await watch.DisposeAsync();
            throw;
        }
    }

    public static string TunnelSocket(NetworkNamespace host) => Path.Combine(StateDirectory(host), "tunnel.sock");

    /// <summary>
    /// The userspace tunnel as an operator runs it: a long-lived <c>switchover tunnel run</c> agent on each host, with
    /// <c>--dataplane userspace</c> (or <paramref name="dataplane"/>) and plain GRE (or <paramref name="encapsulation"/>).
    /// </summary>
    public static async Task<Agents> StartAgentsAsync(FourHostLab lab, CancellationToken cancellationToken, string dataplane = "userspace",
        TunnelEncapsulation encapsulation = TunnelEncapsulation.Gre)
    {
        var agents = new Agents();
        try
        {
            foreach (var (host, local, remote) in new[] { (lab.Old, lab.OldV4, lab.NewV4), (lab.New, lab.NewV4, lab.OldV4) })
            {
                Directory.CreateDirectory(StateDirectory(host));
                var agent = host.StartProcess("dotnet", [Artifacts.Cli, "tunnel", "run", "--name", Tunnel, "--local", local.ToString(), "--remote", remote.ToString(),
                    "--key", $"{Key}", "--mtu", "1472", "--dataplane", dataplane, "--socket", TunnelSocket(host),
                    "--encapsulation", encapsulation == TunnelEncapsulation.GreInUdp ? "udp" : "gre"]);
                agents.Processes.Add(agent);
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
                while ((await host.TryRunAsync("ip", ["link", "show", "dev", Tunnel], cancellationToken)).ExitCode != 0)
                {
                    Assert.False(agent.HasExited || DateTime.UtcNow > deadline, $"The tunnel agent on {host} did not create {Tunnel}:\n{agent.Output}");
                    await Task.Delay(100, cancellationToken);
                }
            }

            return agents;
        }
        catch
        {
            await agents.DisposeAsync();
            throw;
        }
    }

    public sealed class Agents : IAsyncDisposable
    {
        public List<LabProcess> Processes { get; } = [];

        public string Describe() => string.Join('\n', Processes.Select(p => p.Output));

        public async ValueTask DisposeAsync()
        {
            foreach (var agent in Processes)
            {
                agent.SendSignal(Signals.Terminate);
                Assert.Equal(0, await agent.Exited.WaitAsync(TimeSpan.FromSeconds(30)));
                await agent.DisposeAsync();
            }
        }
    }

    public sealed class Tunnels(UserspaceGreTunnel old, UserspaceGreTunnel @new) : IAsyncDisposable
    {
        public string Describe() => $"old tunnel: {old.Counters}\nnew tunnel: {@new.Counters}";

        public async ValueTask DisposeAsync()
        {
            await @new.DisposeAsync();
            await old.DisposeAsync();
        }
    }
}
