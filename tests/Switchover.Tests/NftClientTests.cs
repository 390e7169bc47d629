using Switchover.Netfilter;
using Switchover.Processes;

namespace Switchover.Tests;

public sealed class NftClientTests
{
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");

    [Fact]
    public void Without_a_program_the_handoff_table_goes_through_netlink_and_other_text_through_libnftables_and_with_one_through_that_program()
    {
        Assert.Equal("libnftables", NftClient.Create(null).Transport);
        Assert.Equal("libnftables", NftClient.Create(string.Empty).Transport);
        Assert.Equal("/usr/sbin/nft", NftClient.Create("/usr/sbin/nft").Transport);
        Assert.Equal("nf_tables netlink", NftClient.Create(null).TableTransport);
        Assert.Equal("libnftables", NftClient.Create("libnftables").TableTransport);
        Assert.Equal("libnftables", NftClient.Create("libnftables").Transport);
        Assert.Equal("/usr/sbin/nft", NftClient.Create("/usr/sbin/nft").TableTransport);
        Assert.Equal("ctnetlink", ConntrackClient.Create(null).Source);
        Assert.Equal("conntrack", ConntrackClient.Create("conntrack").Source);
    }

    [Fact(Timeout = 10000)]
    public async Task A_check_is_a_dry_run_of_the_same_text_and_an_apply_is_not()
    {
        var backend = new RecordingBackend();
        var nft = new NftClient(backend);

        await nft.CheckAsync(Echo, CancellationToken.None);
        await nft.DeleteTableAsync(Echo, CancellationToken.None);

        Assert.Equal([(HandoffTable.RenderProbe(Echo), true), (HandoffTable.RenderDelete(Echo), false)], backend.Calls);
    }

    [Fact(Timeout = 10000)]
    public async Task Libnftables_refusing_for_lack_of_privilege_says_to_run_as_root_or_grant_cap_net_admin()
    {
        // What libnftables 1.0.6 writes to its error buffer for an unprivileged process.
        var backend = new RecordingBackend { Answer = new NftResult(-1, string.Empty, "netlink: Error: cache initialization failed: Operation not permitted\n") };

        var error = await Assert.ThrowsAsync<NftException>(() => new NftClient(backend).CheckAsync(Echo, CancellationToken.None));

        Assert.Contains("Run as root or grant CAP_NET_ADMIN", error.Message, StringComparison.Ordinal);
        Assert.Equal(-1, error.Command.ExitCode);
        Assert.Contains("cache initialization failed", error.Command.StandardError, StringComparison.Ordinal);
        Assert.Contains("--check", error.Command.CommandLine, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task A_missing_libnftables_says_which_package_to_install_and_how_to_use_a_program_instead()
    {
        var backend = new RecordingBackend
        {
            Throw = new CommandException("libnftables.so.1", null, string.Empty, "libnftables.so.1 could not be loaded.", new DllNotFoundException("libnftables.so.1")),
        };

        var error = await Assert.ThrowsAsync<NftException>(() => new NftClient(backend).ApplyScriptAsync("table inet x {\n}\n", CancellationToken.None));

        Assert.Contains("apt-get install libnftables1", error.Message, StringComparison.Ordinal);
        Assert.Contains("Switchover:NftPath", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task Listing_a_table_that_does_not_exist_gives_null_and_a_rejected_ruleset_says_nothing_changed()
    {
        var backend = new RecordingBackend { Answer = new NftResult(-1, string.Empty, "Error: No such file or directory\nlist table inet switchover_echo\n") };
        Assert.Null(await new NftClient(backend).ListTableAsync(Echo, CancellationToken.None));
        Assert.Equal(("list table inet switchover_echo\n", false), backend.Calls.Single());

        backend.Answer = new NftResult(1, string.Empty, "Error: syntax error, unexpected '}'\n");
        var error = await Assert.ThrowsAsync<NftException>(() => new NftClient(backend).ApplyScriptAsync("table inet x { bogus }", CancellationToken.None));
        Assert.StartsWith("nft rejected the ruleset; nothing was changed.", error.Message, StringComparison.Ordinal);
        Assert.Contains("syntax error", error.Message, StringComparison.Ordinal);
    }

    private sealed class RecordingBackend : INftBackend
    {
        public List<(string Commands, bool DryRun)> Calls { get; } = [];

        public NftResult Answer { get; set; } = new(0, string.Empty, string.Empty);

        public CommandException? Throw { get; set; }

        public string Name => "recording";

        public string Describe(bool dryRun) => dryRun ? "nft --check -f - (recording)" : "nft -f - (recording)";

        public Task<NftResult> RunAsync(string commands, bool dryRun, CancellationToken cancellationToken)
        {
            Calls.Add((commands, dryRun));
            return Throw is null ? Task.FromResult(Answer) : Task.FromException<NftResult>(Throw);
        }
    }
}
