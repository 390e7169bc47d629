using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Switchover.Lab;

/// <summary>
/// A host firewall as production hosts have it: default-deny input that allows only the public port 8080. Each shape
/// is loaded from a fixture in this folder (see its header for the source, and capture.sh to regenerate it).
/// </summary>
public enum FirewallShape
{
    /// <summary>nft-policy-drop.nft: a native <c>table inet host_fw</c> with an input chain at policy drop.</summary>
    NftPolicyDrop,

    /// <summary>ufw.rules.v4/.v6: what ufw 0.36 writes (iptables-nft) after <c>ufw default deny incoming; ufw allow 8080/tcp; ufw enable</c>.</summary>
    Ufw,

    /// <summary>
    /// firewalld.nft: what firewalld 1.3 writes (nftables backend) for its default zone with <c>--add-port=8080/tcp</c>.
    /// Its input chain accepts <c>ct status dnat</c> (for its own port forwards), so even NAT REDIRECT steering passes
    /// it; unlike the other shapes it rejects (ICMP admin-prohibited) instead of dropping.
    /// </summary>
    Firewalld,

    /// <summary>docker.rules.v4/.v6: Docker 28's chains (default bridge, a port 8081 published to a container) next to a default-deny INPUT.</summary>
    DockerWithDefaultDenyInput,
}

/// <summary>What a connection attempt got.</summary>
public enum ProbeOutcome
{
    Connected,

    /// <summary>Refused or unreachable: a reset or an ICMP error (firewalld rejects with admin-prohibited).</summary>
    Rejected,

    /// <summary>No answer within the bound: the SYN was dropped.</summary>
    TimedOut,
}

/// <summary>Loads a <see cref="FirewallShape"/> into a lab namespace, and reads back every rule that is not ours.</summary>
public static partial class HostFirewall
{
    /// <summary>The one port every shape allows.</summary>
    public const int AllowedPort = 8080;

    private static string Fixture(string name)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Firewalls", name);
        return File.Exists(path)
            ? path
            : throw new FileNotFoundException($"Firewall fixture {path} is missing: it is copied from tests/Switchover.Lab/Firewalls/ at build time; rebuild the test project.", path);
    }

    /// <summary>Loads the shape's rules inside <paramref name="host"/>; nothing outside that namespace changes.</summary>
    public static async Task ApplyAsync(NetworkNamespace host, FirewallShape shape, CancellationToken cancellationToken)
    {
        switch (shape)
        {
            case FirewallShape.NftPolicyDrop:
                await host.RunAsync("nft", ["-f", Fixture("nft-policy-drop.nft")], cancellationToken);
                break;
            case FirewallShape.Ufw:
                await host.RunAsync("iptables-restore", [Fixture("ufw.rules.v4")], cancellationToken);
                await host.RunAsync("ip6tables-restore", [Fixture("ufw.rules.v6")], cancellationToken);
                break;
            case FirewallShape.Firewalld:
                await host.RunAsync("nft", ["-f", Fixture("firewalld.nft")], cancellationToken);
                break;
            case FirewallShape.DockerWithDefaultDenyInput:
                // The host as Docker leaves it: its bridge with the address its rules name, and IPv4 forwarding on
                // (Docker enables it, and sets FORWARD to DROP because it did).
                await host.RunAsync("ip", ["link", "add", "docker0", "type", "bridge"], cancellationToken);
                await host.RunAsync("ip", ["addr", "add", "198.51.100.1/24", "dev", "docker0"], cancellationToken);
                await host.RunAsync("ip", ["link", "set", "docker0", "up"], cancellationToken);
                await host.RunAsync("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"], cancellationToken);
                await host.RunAsync("iptables-restore", [Fixture("docker.rules.v4")], cancellationToken);
                await host.RunAsync("ip6tables-restore", [Fixture("docker.rules.v6")], cancellationToken);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(shape), shape, "Unknown firewall shape.");
        }
    }

    /// <summary>
    /// Every table in <paramref name="host"/> except <paramref name="ownTable"/> (e.g. "inet switchover_t1a2b3c4d5"),
    /// as <c>nft -s</c> lists it, followed by iptables-save and ip6tables-save. Stateless: counters move with traffic,
    /// the rules must not. Two snapshots are equal when every foreign rule, chain, set and policy is unchanged.
    /// </summary>
    public static async Task<string> ForeignRulesetAsync(NetworkNamespace host, string ownTable, CancellationToken cancellationToken)
    {
        var snapshot = new StringBuilder();
        var tables = (await host.RunAsync("nft", ["list", "tables"], cancellationToken)).StandardOutput;
        foreach (var line in tables.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // "table <family> <name>"
            var parts = line.Split(' ');
            if (parts is not ["table", var family, var name])
            {
                throw new InvalidOperationException($"Unexpected line in `nft list tables` of {host}: '{line}'.");
            }

            if ($"{family} {name}" == ownTable)
            {
                continue;
            }

            snapshot.Append((await host.RunAsync("nft", ["-s", "list", "table", family, name], cancellationToken)).StandardOutput);
        }

        foreach (var save in new[] { "iptables-save", "ip6tables-save" })
        {
            snapshot.Append("--- ").Append(save).Append('\n');
            snapshot.Append(WithoutDatesAndCounters((await host.RunAsync(save, [], cancellationToken)).StandardOutput));
        }

        return snapshot.ToString();
    }

    /// <summary>Opens a TCP connection from <paramref name="from"/> to <paramref name="to"/> and closes it at once.</summary>
    public static async Task<ProbeOutcome> ProbeAsync(NetworkNamespace from, IPEndPoint to, TimeSpan bound, CancellationToken cancellationToken)
    {
        using var socket = from.CreateSocket(to.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(bound);
        try
        {
            await socket.ConnectAsync(to, timeout.Token);
            return ProbeOutcome.Connected;
        }
        catch (SocketException)
        {
            return ProbeOutcome.Rejected;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return ProbeOutcome.TimedOut;
        }
    }

    /// <summary>
    /// Proves the shape is in force before a test or the demo relies on it: from <paramref name="client"/>, a listener
    /// on the allowed port answers and a listener on another port does not, on every address.
    /// </summary>
    /// <exception cref="InvalidOperationException">The shape is not in force.</exception>
    public static async Task EnsureDefaultDenyAsync(FirewallShape shape, NetworkNamespace server, NetworkNamespace client, IEnumerable<IPAddress> addresses, CancellationToken cancellationToken)
    {
        const int deniedPort = 8099;
        foreach (var address in addresses)
        {
            foreach (var (port, expectAnswer) in new[] { (AllowedPort, true), (deniedPort, false) })
            {
                using var listener = server.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                listener.Bind(new IPEndPoint(address, port));
                listener.Listen();
                var outcome = await ProbeAsync(client, new IPEndPoint(address, port), TimeSpan.FromSeconds(1), cancellationToken);
                if ((outcome == ProbeOutcome.Connected) != expectAnswer)
                {
                    throw new InvalidOperationException(
                    $"Firewall shape {shape} is not in force in {server}: a listener on {address} port {port} " +
                    $"got {outcome} from {client}, expected {(expectAnswer ? "an answer (the port is allowed)" : "none (default deny)")}. Check the fixture and its loading.");
                }
            }
        }
    }

    private static string WithoutDatesAndCounters(string save) =>
        ChainCounters().Replace(string.Join('\n', save.Split('\n').Where(l => !l.StartsWith("# Generated by ", StringComparison.Ordinal) && !l.StartsWith("# Completed on ", StringComparison.Ordinal))), "[0:0]");

    [GeneratedRegex(@"\[\d+:\d+\]")]
    private static partial Regex ChainCounters();
}
