using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Switchover.Lab;
using Switchover.Netfilter;
using Switchover.State;
using Xunit.Abstractions;

namespace Switchover.IntegrationTests;

/// <summary>
/// Our own nf_tables batches against libnftables fed the rendered text: every shape of the handoff table is applied
/// through netlink in one namespace and through libnftables in another, and nft must list the same table in both,
/// as text and as the kernel's bytecode.
/// </summary>
public sealed partial class NfTablesEquivalenceTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");

    private NetworkNamespace _netlinkNs = null!;
    private NetworkNamespace _textNs = null!;

    private CancellationTokenSource Timeout { get; } = new(TimeSpan.FromMinutes(2));

    private CancellationToken Token => Timeout.Token;

    /// <summary>The shapes the golden tests render, and the public address forms.</summary>
    public static TheoryData<string> Shapes => new(ShapeTables.Keys);

    private static readonly Dictionary<string, HandoffTable> ShapeTables = new(StringComparer.Ordinal)
    {
        ["tproxy, three generations guarded"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, Steering.Tproxy, new PortMapping(8080, 40001)))
            .With(Generation(2, GenerationState.Active, Steering.Tproxy, new PortMapping(8080, 40002), new PortMapping(8443, 40003)))
            .With(Generation(3, GenerationState.Starting, Steering.Tproxy, new PortMapping(8080, 40004)))),
        ["tproxy, every public address form"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo).With(Generation(4, GenerationState.Active, Steering.Tproxy,
            new PortMapping(5000, 40001, "127.0.0.1"), new PortMapping(5000, 40002, "::1"), new PortMapping(8080, 40003, "0.0.0.0"),
            new PortMapping(8081, 40004, "203.0.113.7"), new PortMapping(8082, 40005, "2001:db8::7"), new PortMapping(8083, 40006)))),
        ["redirect, with a draining generation"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, Steering.Tproxy, new PortMapping(8080, 40001)))
            .With(Generation(2, GenerationState.Active, Steering.Redirect, new PortMapping(8080, 40002)))),
        ["redirect, every public address form"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo).With(Generation(300, GenerationState.Active, Steering.Redirect,
            new PortMapping(5000, 40001, "127.0.0.1"), new PortMapping(5000, 40002, "::1"), new PortMapping(8080, 40003, "0.0.0.0"),
            new PortMapping(8082, 40005, "2001:db8::7"), new PortMapping(65535, 1)))),
        ["tproxy while a redirected generation drains"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)
            .With(Generation(1, GenerationState.Draining, Steering.Redirect, new PortMapping(8080, 40001)))
            .With(Generation(2, GenerationState.Active, Steering.Tproxy, new PortMapping(8080, 40002)))),
        ["no active generation, ports guarded"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)
            .With(Generation(5, GenerationState.Starting, Steering.Tproxy, new PortMapping(8080, 40010)))),
        ["empty"] = HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)),
    };

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        _netlinkNs = await NetworkNamespace.CreateAsync("so-nl", Token);
        _textNs = await NetworkNamespace.CreateAsync("so-nt", Token);
    }

    public async Task DisposeAsync()
    {
        await _netlinkNs.DisposeAsync();
        await _textNs.DisposeAsync();
        Timeout.Dispose();
    }

    [Theory(Timeout = 60_000)]
    [MemberData(nameof(Shapes))]
    public async Task A_table_applied_through_netlink_lists_exactly_as_the_same_table_applied_as_text(string shape)
    {
        await ApplyBothAsync(ShapeTables[shape]);
        await AssertSameTableAsync();
    }

    [Fact(Timeout = 60_000)]
    public async Task Redefining_the_table_over_another_shape_leaves_what_the_text_leaves()
    {
        await ApplyBothAsync(ShapeTables["redirect, with a draining generation"]);
        await ApplyBothAsync(ShapeTables["tproxy, three generations guarded"]);
        await ApplyBothAsync(ShapeTables["tproxy, three generations guarded"]);
        await AssertSameTableAsync();
        await ApplyBothAsync(ShapeTables["redirect, every public address form"]);
        await AssertSameTableAsync();
    }

    [Fact(Timeout = 60_000)]
    public async Task Deleting_the_table_through_netlink_is_idempotent_and_checking_changes_nothing()
    {
        using var netlink = InNamespace(_netlinkNs, NfTablesNetlink.OpenHere);
        var nft = new NftClient(new UnusedTextBackend(), netlink);

        await nft.CheckAsync(Echo, Token);
        Assert.Equal(string.Empty, await ListTablesAsync(_netlinkNs));
        await nft.DeleteTableAsync(Echo, Token);
        await nft.ApplyAsync(ShapeTables["tproxy, three generations guarded"], Token);
        Assert.Contains("switchover_echo", await ListTablesAsync(_netlinkNs), StringComparison.Ordinal);
        await nft.DeleteTableAsync(Echo, Token);
        await nft.DeleteTableAsync(Echo, Token);
        Assert.Equal(string.Empty, await ListTablesAsync(_netlinkNs));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_batch_the_kernel_refuses_names_the_message_and_errno_and_changes_nothing()
    {
        using var netlink = InNamespace(_netlinkNs, NfTablesNetlink.OpenHere);
        var nft = new NftClient(new UnusedTextBackend(), netlink);

        // A chain of ours with another hook already there: the kernel refuses to turn it into a prerouting chain.
        await _netlinkNs.RunAsync("nft", ["add table inet switchover_echo; add chain inet switchover_echo prerouting { type filter hook input priority 0; }; add rule inet switchover_echo prerouting tcp dport 1 drop"], Token);
        var before = await ListAsync(_netlinkNs, "list", "table", "inet", "switchover_echo");

        var error = await Assert.ThrowsAsync<NftException>(() => nft.ApplyAsync(ShapeTables["tproxy, three generations guarded"], Token));
        output.WriteLine(error.Message);

        Assert.Contains("add chain inet switchover_echo prerouting", error.Message, StringComparison.Ordinal);
        Assert.Contains("errno", error.Message, StringComparison.Ordinal);
        Assert.Contains("nothing was changed", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, error.Command.ExitCode);
        Assert.Equal(before, await ListAsync(_netlinkNs, "list", "table", "inet", "switchover_echo"));
        await nft.DeleteTableAsync(Echo, Token);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_thread_without_cap_net_admin_is_told_to_run_as_root_or_grant_it_and_nothing_changes()
    {
        var table = ShapeTables["tproxy, three generations guarded"];
        var (apply, check) = InNamespace(_netlinkNs, () =>
        {
            // This thread alone gives up CAP_NET_ADMIN (capabilities are per thread), then opens its socket.
            DropNetAdmin();
            using var netlink = NfTablesNetlink.OpenHere();
            var nft = new NftClient(new UnusedTextBackend(), netlink);
            var apply = Record.Exception(() => nft.ApplyAsync(table, CancellationToken.None).GetAwaiter().GetResult());
            var check = Record.Exception(() => nft.CheckAsync(Echo, CancellationToken.None).GetAwaiter().GetResult());
            return (apply, check);
        });

        Assert.All(new[] { apply, check }, e =>
        {
            var nft = Assert.IsType<NftException>(e);
            output.WriteLine(nft.Message);
            Assert.Contains("Run as root or grant CAP_NET_ADMIN", nft.Message, StringComparison.Ordinal);
            Assert.Contains("errno 1", nft.Message, StringComparison.Ordinal);
        });
        Assert.Equal(string.Empty, await ListTablesAsync(_netlinkNs));
    }

    private static unsafe void DropNetAdmin()
    {
        const int CapNetAdmin = 12;
        var header = stackalloc uint[2] { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
        var data = stackalloc uint[6]; // two of { effective, permitted, inheritable }
        if (CapGet(header, data) != 0)
        {
            throw new InvalidOperationException($"capget failed: errno {Marshal.GetLastPInvokeError()}");
        }

        data[0] &= ~(1u << CapNetAdmin);
        if (CapSet(header, data) != 0)
        {
            throw new InvalidOperationException($"capset failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", EntryPoint = "capget", SetLastError = true)]
    private static unsafe partial int CapGet(uint* header, uint* data);

    [LibraryImport("libc", EntryPoint = "capset", SetLastError = true)]
    private static unsafe partial int CapSet(uint* header, uint* data);

    private async Task ApplyBothAsync(HandoffTable table)
    {
        using (var netlink = InNamespace(_netlinkNs, NfTablesNetlink.OpenHere))
        {
            await new NftClient(new UnusedTextBackend(), netlink).ApplyAsync(table, Token);
        }

        using var text = InNamespace(_textNs, LibNftablesBackend.OpenHere);
        await new NftClient(text).ApplyAsync(table, Token);
    }

    private async Task AssertSameTableAsync()
    {
        string[] list = ["list", "table", "inet", "switchover_echo"];
        var viaText = await ListAsync(_textNs, list);
        Assert.Contains("chain prerouting", viaText, StringComparison.Ordinal);
        Assert.Equal(viaText, await ListAsync(_netlinkNs, list));

        // The kernel's own bytecode, as it dumps it (set names are the kernel's: __set0, __set1 in both).
        string[] debug = ["--debug=netlink", "list", "table", "inet", "switchover_echo"];
        var bytecode = await ListAsync(_textNs, debug);
        Assert.Contains("[ immediate reg 0 ", bytecode, StringComparison.Ordinal);
        Assert.Equal(bytecode, await ListAsync(_netlinkNs, debug));
        output.WriteLine(bytecode);
    }

    private async Task<string> ListAsync(NetworkNamespace ns, params string[] arguments) =>
        (await ns.RunAsync("nft", arguments, Token)).StandardOutput;

    private Task<string> ListTablesAsync(NetworkNamespace ns) => ListAsync(ns, "list", "tables");

    private static GenerationRecord Generation(long id, GenerationState state, Steering steering, params PortMapping[] ports) =>
        new(id, 1000 + (int)id, 42, state, DateTimeOffset.UnixEpoch, ports, steering);

    private static T InNamespace<T>(NetworkNamespace ns, Func<T> action) => ns.RunOnThreadInside(action);

    /// <summary>The netlink path must not fall back to text: any use of this backend fails the test.</summary>
    private sealed class UnusedTextBackend : INftBackend
    {
        public string Name => "unused";

        public string Describe(bool dryRun) => "unused";

        public Task<NftResult> RunAsync(string commands, bool dryRun, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("The handoff table went through text, not netlink: " + commands);
    }
}
