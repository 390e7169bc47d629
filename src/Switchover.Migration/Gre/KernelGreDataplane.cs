using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using Switchover.Netfilter;
using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>
/// The kernel's GRE: `ip link add NAME type gre` (IPv4 outer) or `type ip6gre` (IPv6 outer), deleted on dispose. Once
/// created it needs no process; this object only owns its lifetime. Wire-compatible with <see cref="UserspaceGreTunnel"/>:
/// the same key (ikey = okey), checksums and sequence numbers sent only when asked (ocsum, oseq), and for ip6gre no
/// encapsulation limit option, so that both dataplanes have the same overhead and MTU. With the link comes its
/// <see cref="GrePeerFilter"/> table, which drops GRE to the local address from anyone but the remote end (the userspace
/// dataplane does that in its receive loop).
/// </summary>
public sealed class KernelGreDataplane : ITunnelDataplane
{
    private static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(30);

    private readonly ICommandRunner _runner;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _created;
    private bool _fouOwned;

    public KernelGreDataplane(TunnelOptions options)
        : this(options, CommandRunner.Instance)
    {
    }

    internal KernelGreDataplane(TunnelOptions options, ICommandRunner runner)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        _runner = runner;
    }

    public TunnelOptions Options { get; }

    public GreDataplaneKind Kind => GreDataplaneKind.Kernel;

    public Task Completion => _completion.Task;

    /// <summary>`ip link add NAME type gre|ip6gre local A remote B ttl T [key K] [ocsum] [oseq] [fwmark M] [encaplimit none allow-localremote]`.</summary>
    internal static Command AddCommand(TunnelOptions options)
    {
        var v6 = options.OuterFamily == AddressFamily.InterNetworkV6;
        var arguments = new List<string>
        {
            "link", "add", options.Name, "type", v6 ? "ip6gre" : "gre",
            "local", options.Local.ToString(), "remote", options.Remote.ToString(),
            "ttl", options.Ttl.ToString(CultureInfo.InvariantCulture),
        };
        if (options.Key is { } key)
        {
            arguments.AddRange(["key", key.ToString(CultureInfo.InvariantCulture)]);
        }

        if (options.SendChecksum)
        {
            arguments.Add("ocsum");
        }

        if (options.SendSequenceNumbers)
        {
            arguments.Add("oseq");
        }

        if (options.FirewallMark is { } mark)
        {
            arguments.AddRange(["fwmark", "0x" + mark.ToString("x", CultureInfo.InvariantCulture)]);
        }

        if (options.Encapsulation == TunnelEncapsulation.GreInUdp)
        {
            // The kernel's GRE in UDP is FOU (foo-over-UDP) with GRE as the payload: the same RFC 8086 framing as the
            // userspace dataplane, port 4754 at both ends. Receiving needs the FOU port as well (FouAddCommand).
            var port = TunnelOptions.GreInUdpPort.ToString(CultureInfo.InvariantCulture);
            arguments.AddRange(["encap", "fou", "encap-sport", port, "encap-dport", port]);
        }

        if (v6)
        {
            // ip6gre adds an 8-byte destination option by default; the userspace dataplane does not. And it refuses to
            // send when the remote address is also local ("Remote address found on this node", a tx error per packet),
            // which is the new host's case once it holds the old host's moved address on lo (found in the VM lab).
            arguments.AddRange(["encaplimit", "none", "allow-localremote"]);
        }

        return UserspaceGreTunnel.IpCommand(options, [.. arguments]);
    }

    /// <summary>`ip fou add port 4754 ipproto 47 [-6]`: UDP to port 4754 is handed to the GRE receive path (GRE in UDP only).</summary>
    internal static Command FouAddCommand(TunnelOptions options) =>
        UserspaceGreTunnel.IpCommand(options, [.. FouArguments(options, "add", "ipproto", "47")]);

    internal static Command FouDeleteCommand(TunnelOptions options) =>
        UserspaceGreTunnel.IpCommand(options, [.. FouArguments(options, "del")]);

    private static List<string> FouArguments(TunnelOptions options, string verb, params string[] more)
    {
        var arguments = new List<string> { "fou", verb, "port", TunnelOptions.GreInUdpPort.ToString(CultureInfo.InvariantCulture) };
        arguments.AddRange(more);
        if (options.OuterFamily == AddressFamily.InterNetworkV6)
        {
            arguments.Add("-6");
        }

        return arguments;
    }

    internal static Command UpCommand(TunnelOptions options) =>
        UserspaceGreTunnel.IpCommand(options, "link", "set", "dev", options.Name,
            "mtu", options.EffectiveMtu.ToString(CultureInfo.InvariantCulture), "up");

    /// <summary>`nft -f -` of the link's <see cref="GrePeerFilter"/> table, inside the tunnel's namespace when it has one.</summary>
    internal static Command FilterCommand(TunnelOptions options) => NftCommand(options, Filter(options).Render());

    internal static Command FilterDeleteCommand(TunnelOptions options) => NftCommand(options, Filter(options).RenderDelete());

    internal static GrePeerFilter Filter(TunnelOptions options) => new(options.Name, options.Local, options.Remote)
    {
        UdpPort = options.Encapsulation == TunnelEncapsulation.GreInUdp ? TunnelOptions.GreInUdpPort : null,
    };

    internal static Command DeleteCommand(TunnelOptions options) =>
        UserspaceGreTunnel.IpCommand(options, "link", "del", "dev", options.Name);

    internal static Command StatisticsCommand(TunnelOptions options) =>
        UserspaceGreTunnel.IpCommand(options, "-s", "-j", "link", "show", "dev", options.Name);

    private static Command NftCommand(TunnelOptions options, string ruleset) =>
        (options.NetworkNamespace is { } ns ? new Command("ip", ["netns", "exec", ns, "nft", "-f", "-"]) : new Command("nft", ["-f", "-"]))
            with { StandardInput = ruleset };

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        Options.ThrowIfInvalid();
        if (_created)
        {
            throw new InvalidOperationException($"Tunnel {Options.Name} is already started.");
        }

        if (Options.Encapsulation == TunnelEncapsulation.GreInUdp)
        {
            await AddFouAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            await _runner.RunAsync(AddCommand(Options), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when ((e is CommandException or OperationCanceledException) && _fouOwned)
        {
            await DeleteFouAsync().ConfigureAwait(false);
            if (e is not CommandException ce)
            {
                throw;
            }

            throw AddFailure(ce);
        }
        catch (CommandException e)
        {
            throw AddFailure(e);
        }

        _created = true;
        try
        {
            await _runner.RunAsync(FilterCommand(Options), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is CommandException or OperationCanceledException)
        {
            await DeleteAsync().ConfigureAwait(false);
            if (e is OperationCanceledException)
            {
                throw;
            }

            throw new TunnelException($"Could not load the nftables table {Filter(Options).TableName} that drops GRE from sources other than " +
                $"{Options.Remote}: {e.Message}. The link was deleted again. Is nftables installed (apt-get install nftables)?", e);
        }

        try
        {
            await _runner.RunAsync(UpCommand(Options), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is CommandException or OperationCanceledException)
        {
            await DeleteAsync().ConfigureAwait(false);
            if (e is OperationCanceledException)
            {
                throw;
            }

            throw new TunnelException($"Could not set MTU {Options.EffectiveMtu} on {Options.Name} and bring it up: {e.Message}. The link was deleted again.", e);
        }
    }

    private TunnelException AddFailure(CommandException e)
    {
        var kind = Options.OuterFamily == AddressFamily.InterNetworkV6 ? "ip6gre" : "gre";
        if (e.StandardError.Contains("Unknown device type", StringComparison.Ordinal))
        {
            return new TunnelException($"This kernel has no {kind} support ({e.StandardError.Trim()}): use the userspace dataplane, or load the module " +
                $"(modprobe {(kind == "gre" ? "ip_gre" : "ip6_gre")}).", e);
        }

        return Options.Encapsulation == TunnelEncapsulation.GreInUdp && e.StandardError.Contains("encap", StringComparison.OrdinalIgnoreCase)
            ? new TunnelException($"Could not create {kind} link {Options.Name} with FOU encapsulation ({e.StandardError.Trim()}): load the module " +
                "(modprobe fou), or use the userspace dataplane (--dataplane userspace), which speaks GRE in UDP itself.", e)
            : new TunnelException($"Could not create {kind} link {Options.Name}: {e.Message}", e);
    }

    /// <summary>
    /// The FOU receive port is per network namespace, not per link: when it is there already (another GRE-in-UDP link
    /// of this host made it), it is used and left to its owner.
    /// </summary>
    private async Task AddFouAsync(CancellationToken cancellationToken)
    {
        var modules = await FouModules.LoadAsync(_runner, Options.OuterFamily == AddressFamily.InterNetworkV6, cancellationToken).ConfigureAwait(false);
        try
        {
            await _runner.RunAsync(FouAddCommand(Options), cancellationToken).ConfigureAwait(false);
            _fouOwned = true;
        }
        catch (CommandException e) when (e.StandardError.Contains("File exists", StringComparison.Ordinal))
        {
        }
        catch (CommandException e)
        {
            throw new TunnelException($"Could not open the FOU receive port {TunnelOptions.GreInUdpPort} for GRE in UDP ('{FouAddCommand(Options)}': " +
                $"{e.StandardError.Trim()}{(modules is null ? "" : "; " + modules)}). This kernel may lack FOU: load it (modprobe fou), or use the userspace dataplane (--dataplane userspace). " +
                "Nothing was changed.", e);
        }
    }

    private async Task DeleteFouAsync()
    {
        using var timeout = new CancellationTokenSource(CleanupTimeout);
        var result = await _runner.TryRunAsync(FouDeleteCommand(Options), timeout.Token).ConfigureAwait(false);
        _fouOwned = false;
        if (result.ExitCode != 0)
        {
            throw new TunnelException($"Could not delete the FOU port {TunnelOptions.GreInUdpPort} (exit {result.ExitCode}: {result.StandardError.Trim()}). " +
                $"Delete it by hand: {FouDeleteCommand(Options)}");
        }
    }

    public async Task<TunnelCounters> GetCountersAsync(CancellationToken cancellationToken)
    {
        if (!_created)
        {
            return new TunnelCounters();
        }

        var result = await _runner.RunAsync(StatisticsCommand(Options), cancellationToken).ConfigureAwait(false);
        return ParseStatistics(result.StandardOutput);
    }

    public async ValueTask DisposeAsync()
    {
        if (_created)
        {
            await DeleteAsync().ConfigureAwait(false);
        }
        else if (_fouOwned)
        {
            await DeleteFouAsync().ConfigureAwait(false);
        }

        _completion.TrySetResult();
    }

    /// <summary>The stats64 of `ip -s -j link show`. Errors and drops of the kernel have no finer split.</summary>
    internal static TunnelCounters ParseStatistics(string json)
    {
        using var document = JsonDocument.Parse(json);
        var stats = document.RootElement[0].GetProperty("stats64");
        var rx = stats.GetProperty("rx");
        var tx = stats.GetProperty("tx");
        return new TunnelCounters
        {
            RxPackets = rx.GetProperty("packets").GetInt64(),
            RxBytes = rx.GetProperty("bytes").GetInt64(),
            RxErrors = rx.GetProperty("errors").GetInt64() + rx.GetProperty("dropped").GetInt64(),
            TxPackets = tx.GetProperty("packets").GetInt64(),
            TxBytes = tx.GetProperty("bytes").GetInt64(),
            TxErrors = tx.GetProperty("errors").GetInt64(),
            TxDropped = tx.GetProperty("dropped").GetInt64(),
        };
    }

    private async Task DeleteAsync()
    {
        // Cleanup gets its own budget, so it runs even when the caller's token has fired. The filter goes first: it
        // holds no traffic up, and deleting a table that is not there succeeds.
        using var timeout = new CancellationTokenSource(CleanupTimeout);
        var filter = await _runner.TryRunAsync(FilterDeleteCommand(Options), timeout.Token).ConfigureAwait(false);
        var result = await _runner.TryRunAsync(DeleteCommand(Options), timeout.Token).ConfigureAwait(false);
        if (_fouOwned)
        {
            // After the link: while the link is there, its packets would go out as FOU with nobody receiving the replies.
            await DeleteFouAsync().ConfigureAwait(false);
        }

        if (result.ExitCode != 0 && !result.StandardError.Contains("Cannot find device", StringComparison.Ordinal))
        {
            throw new TunnelException($"Could not delete link {Options.Name} ('{DeleteCommand(Options)}' exited with {result.ExitCode}: " +
                $"{result.StandardError.Trim()}). Delete it by hand: {DeleteCommand(Options)}");
        }

        _created = false;
        if (filter.ExitCode != 0)
        {
            throw new TunnelException($"Could not delete the nftables table {Filter(Options).TableName} (exit {filter.ExitCode}: {filter.StandardError.Trim()}). " +
                $"Delete it by hand: nft delete table inet {Filter(Options).TableName}");
        }
    }
}
