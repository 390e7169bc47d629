using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

/// <summary>
/// An nft killed after the kernel committed its transaction (exit 137): the kernel and the state must not disagree.
/// nft is a shim that runs the real nft inside a network namespace the test creates, then kills itself when told to.
/// </summary>
public sealed class InterruptedTransactionTests : IAsyncLifetime
{
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-interrupted-").FullName;
    private readonly NamespaceName _name = NamespaceName.Parse("k" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 4)));
    private readonly List<LabProcess> _generations = [];
    private CancellationTokenSource Timeout { get; } = new(TimeSpan.FromMinutes(2));
    private NetworkNamespace _host = null!;

    private CancellationToken Token => Timeout.Token;

    private string Shim => Path.Combine(_root, "nft-shim");

    /// <summary>
    /// What the shim does, read from this file: "once": run nft, then SIGKILL itself (exit 137) and forget the mode;
    /// "then-dead": the same, and every later call dies before running nft; absent: plain nft.
    /// </summary>
    private string KillMarker => Path.Combine(_root, "kill-after-commit");

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        _host = await NetworkNamespace.CreateAsync("so-k", Token);
        await File.WriteAllTextAsync(Shim, $$"""
            #!/bin/sh
            mode=$(cat {{KillMarker}} 2>/dev/null)
            [ "$mode" = dead ] && kill -9 $$
            ip netns exec {{_host.Name}} nft "$@"
            rc=$?
            case "$mode" in
                once) rm -f {{KillMarker}}; kill -9 $$ ;;
                then-dead) echo dead > {{KillMarker}}; kill -9 $$ ;;
            esac
            exit $rc
            """.Replace("\r", string.Empty, StringComparison.Ordinal), Token);
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(Shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    public async Task DisposeAsync()
    {
        foreach (var generation in _generations)
        {
            await generation.DisposeAsync();
        }

        await _host.DisposeAsync();
        Directory.Delete(_root, recursive: true);
        Timeout.Dispose();
    }

    /// <summary>A live process standing in for a generation (only its identity matters here).</summary>
    private ProcessIdentity Generation()
    {
        var process = _host.StartProcess("sleep", ["120"]);
        _generations.Add(process);
        return ProcessIdentity.Read(process.Pid)!;
    }

    private async Task<(int? SteeredTo, string Kernel)> KernelAsync()
    {
        var listed = await _host.RunAsync("nft", ["-j", "list", "table", "inet", _name.TableName], Token);
        var (steers, _) = HandoffInvariant.ParseTable(listed.StandardOutput);
        return (steers.SingleOrDefault()?.TargetPort, listed.StandardOutput);
    }

    [Fact(Timeout = 120_000)]
    public async Task When_nft_is_killed_after_the_kernel_committed_the_kernel_is_put_back_to_what_the_state_says()
    {
        var handoff = Handoff.Create(_root, _name, TimeSpan.FromSeconds(5), Shim);
        var first = (await handoff.RegisterAsync(Generation(), [new PortMapping(8080, 40001)], CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, Token);
        var second = (await handoff.RegisterAsync(Generation(), [new PortMapping(8080, 40002)], CancellationToken.None)).Generation;
        await File.WriteAllTextAsync(KillMarker, "once", Token);

        var error = await Assert.ThrowsAsync<Switchover.Netfilter.NftException>(() => handoff.TakeOverAsync(second.Id, Token));

        Assert.Equal(137, error.Command.ExitCode);
        var state = handoff.Store.ReadUnlocked()!;
        Assert.Equal(first.Id, state.Active!.Id);
        Assert.False(state.TransactionPending);
        Assert.Equal(40001, (await KernelAsync()).SteeredTo);
    }

    [Fact(Timeout = 120_000)]
    public async Task When_even_the_restore_is_killed_the_next_operation_applies_the_state_before_anything_else()
    {
        var handoff = Handoff.Create(_root, _name, TimeSpan.FromSeconds(5), Shim);
        var first = (await handoff.RegisterAsync(Generation(), [new PortMapping(8080, 40001)], CancellationToken.None)).Generation;
        await handoff.TakeOverAsync(first.Id, Token);
        var second = (await handoff.RegisterAsync(Generation(), [new PortMapping(8080, 40002)], CancellationToken.None)).Generation;
        await File.WriteAllTextAsync(KillMarker, "then-dead", Token);
        await Assert.ThrowsAsync<Switchover.Netfilter.NftException>(() => handoff.TakeOverAsync(second.Id, Token));
        Assert.True(handoff.Store.ReadUnlocked()!.TransactionPending);
        Assert.Equal(40002, (await KernelAsync()).SteeredTo);
        File.Delete(KillMarker);

        var repair = await handoff.RepairAsync(Token);

        Assert.True(repair.Applied);
        var state = handoff.Store.ReadUnlocked()!;
        Assert.False(state.TransactionPending);
        Assert.Equal(first.Id, state.Active!.Id);
        Assert.Equal(40001, (await KernelAsync()).SteeredTo);
    }
}
