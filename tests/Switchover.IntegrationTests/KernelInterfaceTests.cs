using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Switchover.Interop;
using Switchover.Lab;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.Sockets;
using Switchover.State;

namespace Switchover.IntegrationTests;

/// <summary>
/// libnftables, ctnetlink and sock_diag against the real kernel, each in a namespace of the test's own: the handle
/// (context or socket) is opened on a thread that joined the namespace, which binds it there for its life. The
/// nft and conntrack programs, run in the same namespace, are the witnesses.
/// </summary>
public sealed partial class KernelInterfaceTests : IAsyncLifetime
{
    private NetworkNamespace _ns = null!;

    private CancellationToken Token => Timeout.Token;

    private CancellationTokenSource Timeout { get; } = new(TimeSpan.FromMinutes(2));

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        _ns = await NetworkNamespace.CreateAsync("so-k", Token);
    }

    public async Task DisposeAsync()
    {
        await _ns.DisposeAsync();
        Timeout.Dispose();
    }

    [Fact(Timeout = 60_000)]
    public async Task Libnftables_checks_applies_lists_and_deletes_a_table_in_its_own_namespace_only()
    {
        var name = NamespaceName.Parse("ktest");
        using var backend = InNamespace(LibNftablesBackend.OpenHere);
        var nft = new NftClient(backend);
        var state = NamespaceState.Empty(name)
            .With(new GenerationRecord(4, 1004, 5, GenerationState.Active, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40001)], Steering.Tproxy));

        await nft.CheckAsync(name, Token);
        Assert.DoesNotContain("switchover_ktest", await ListTablesAsync(), StringComparison.Ordinal);

        await nft.ApplyAsync(HandoffTable.FromState(name, state), Token);
        var listed = (await _ns.RunAsync("nft", ["list", "table", "inet", "switchover_ktest"], Token)).StandardOutput;
        Assert.Contains("tproxy to :40001", listed, StringComparison.Ordinal);
        Assert.Equal(listed, await nft.ListTableAsync(name, Token));
        var host = await CommandRunner.Instance.RunAsync(Command.Create("nft", "list", "tables"), Token);
        Assert.DoesNotContain("switchover_ktest", host.StandardOutput, StringComparison.Ordinal);

        var rejected = await Assert.ThrowsAsync<NftException>(() => nft.ApplyScriptAsync("table inet switchover_ktest {\n\tchain c { bogus }\n}\n", Token));
        Assert.Contains("nft rejected the ruleset", rejected.Message, StringComparison.Ordinal);
        Assert.Contains("syntax error", rejected.Command.StandardError, StringComparison.Ordinal);
        Assert.Equal(listed, await nft.ListTableAsync(name, Token));

        await nft.DeleteTableAsync(name, Token);
        Assert.Null(await nft.ListTableAsync(name, Token));
        Assert.DoesNotContain("switchover_ktest", await ListTablesAsync(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Ctnetlink_counts_a_generations_flows_by_mark_and_by_nat_reply_port_as_the_conntrack_program_does()
    {
        // Output is where loopback flows enter conntrack: mark what goes to 40001 and 40003 as generation 3's (0x00040000),
        // NAT 8080 to 40002 (REDIRECT), and drop SYNs to 40003 on input so that flow stays half-open (SYN_SENT).
        await _ns.RunAsync("sh", ["-c", """
            printf '%s\n' 'table inet kt {
              chain out { type filter hook output priority 0; tcp dport { 40001, 40003 } ct mark set ct mark | 0x00040000; }
              chain nat_out { type nat hook output priority -100; tcp dport 8080 redirect to :40002; }
              chain in { type filter hook input priority 0; tcp dport 40003 drop; }
            }' | nft -f -
            """], Token);
        using var marked = Listen(new IPEndPoint(IPAddress.Loopback, 40001));
        using var natted = Listen(new IPEndPoint(IPAddress.IPv6Any, 40002));
        var clients = new List<Socket>();
        try
        {
            foreach (var target in new[] { "127.0.0.1:40001", "127.0.0.1:40001", "127.0.0.1:40001", "127.0.0.1:8080", "127.0.0.1:8080", "[::1]:8080" })
            {
                var endpoint = IPEndPoint.Parse(target);
                var client = _ns.CreateSocket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(endpoint, Token);
            }

            var halfOpen = _ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            clients.Add(halfOpen);
            _ = halfOpen.ConnectAsync(new IPEndPoint(IPAddress.Loopback, 40003), Token).AsTask().ContinueWith(_ => { }, TaskScheduler.Default);
            await Task.Delay(200, Token);

            var ctnetlink = new ConntrackClient(new CtNetlinkSource(protocol => InNamespace(() => NetlinkSocket.Open(protocol))));
            await ctnetlink.CheckAsync(Token);
            var program = new ConntrackClient(new InNamespaceRunner(_ns), "conntrack");
            var tproxied = new GenerationRecord(3, 1003, 5, GenerationState.Draining, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40001)], Steering.Tproxy);
            var redirected = tproxied with { Ports = [new PortMapping(8080, 40002)], Steering = Steering.Redirect };

            Assert.Equal(new FlowCounts(3, 1, 0), await ctnetlink.CountMarkedAsync(0x00040000, HandoffTable.CtMarkMask, Token));
            Assert.Equal(await program.CountMarkedAsync(0x00040000, HandoffTable.CtMarkMask, Token), await ctnetlink.CountMarkedAsync(0x00040000, HandoffTable.CtMarkMask, Token));
            Assert.Equal(1, await ctnetlink.CountHalfOpenAsync(tproxied, Token));
            Assert.Equal(new FlowCounts(3, 0, 0), await ctnetlink.CountAsync(tproxied, new PortMapping(40001, 40001), Token));
            Assert.Equal(new FlowCounts(0, 0, 0), await ctnetlink.CountMarkedAsync(0x00050000, HandoffTable.CtMarkMask, Token));

            Assert.Equal(new FlowCounts(3, 0, 0), await ctnetlink.CountAsync(redirected, Token));
            Assert.Equal(await program.CountAsync(40002, Token), await ctnetlink.CountAsync(40002, Token));
            Assert.Equal(0, await ctnetlink.CountHalfOpenAsync(redirected, Token));
            Assert.Equal(new FlowCounts(0, 0, 0), await ctnetlink.CountAsync(40009, Token));

            // The drain's watch: the first count reads the table, the later ones look the remembered entry up again.
            // Once SYNs to 40003 pass, the client's next SYN retransmit completes the handshake and the entry is assured.
            var drain = new ConntrackClient(new CtNetlinkSource(protocol => InNamespace(() => NetlinkSocket.Open(protocol))));
            Assert.Equal(1, await drain.CountHalfOpenAsync(tproxied, Token));
            Assert.Equal(1, await drain.CountHalfOpenAsync(tproxied, Token));
            await _ns.RunAsync("nft", ["flush", "chain", "inet", "kt", "in"], Token);
            using var listener = Listen(new IPEndPoint(IPAddress.Loopback, 40003));
            var waited = Stopwatch.StartNew();
            while (await drain.CountHalfOpenAsync(tproxied, Token) > 0 && waited.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(100, Token);
            }

            Assert.Equal(0, await drain.CountHalfOpenAsync(tproxied, Token));
            Assert.Equal(new FlowCounts(4, 0, 0), await ctnetlink.CountMarkedAsync(0x00040000, HandoffTable.CtMarkMask, Token));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Sock_diag_reads_the_accept_queue_of_the_listeners_on_a_port_in_both_families()
    {
        Func<int, NetlinkSocket> open = protocol => InNamespace(() => NetlinkSocket.Open(protocol));
        using var v4 = Listen(new IPEndPoint(IPAddress.Loopback, 40011));
        using var dual = Listen(new IPEndPoint(IPAddress.IPv6Any, 40012));
        var clients = new List<Socket>();
        try
        {
            foreach (var target in new[] { "127.0.0.1:40011", "127.0.0.1:40011", "127.0.0.1:40012", "[::1]:40012", "[::1]:40012" })
            {
                var endpoint = IPEndPoint.Parse(target);
                var client = _ns.CreateSocket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(endpoint, Token);
            }

            Assert.Equal(2, ListenQueue.ReadOrThrow(40011, open));
            Assert.Equal(3, ListenQueue.ReadOrThrow(40012, open));
            Assert.Null(ListenQueue.ReadOrThrow(40013, open));

            using var accepted = await dual.AcceptAsync(Token);
            Assert.Equal(2, ListenQueue.ReadOrThrow(40012, open));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    private Socket Listen(IPEndPoint endpoint)
    {
        var socket = _ns.CreateSocket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
        {
            socket.DualMode = true;
        }

        socket.Bind(endpoint);
        socket.Listen(16);
        return socket;
    }

    private async Task<string> ListTablesAsync() => (await _ns.RunAsync("nft", ["list", "tables"], Token)).StandardOutput;

    private T InNamespace<T>(Func<T> action) => _ns.RunOnThreadInside(action);

    /// <summary>Runs each command inside the namespace (<c>ip netns exec</c>).</summary>
    private sealed class InNamespaceRunner(NetworkNamespace ns) : ICommandRunner
    {
        public Task<CommandResult> RunAsync(Command command, CancellationToken cancellationToken) =>
            CommandRunner.Instance.RunAsync(Wrap(command), cancellationToken);

        public Task<CommandResult> TryRunAsync(Command command, CancellationToken cancellationToken) =>
            CommandRunner.Instance.TryRunAsync(Wrap(command), cancellationToken);

        private Command Wrap(Command command) => command with { FileName = "ip", Arguments = ["netns", "exec", ns.Name, command.FileName, .. command.Arguments] };
    }
}
