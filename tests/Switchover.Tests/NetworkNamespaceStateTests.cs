using Switchover.State;

namespace Switchover.Tests;

/// <summary>State is keyed by the network namespace that holds the table, not by the namespace name alone.</summary>
public sealed class NetworkNamespaceStateTests : IDisposable
{
    private static readonly NamespaceName Dup = NamespaceName.Parse("dup");
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-netns-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void One_name_in_two_network_namespaces_has_two_directories_and_two_locks()
    {
        var here = new StateStore(_root, Dup);
        var there = new StateStore(_root, Dup, NetworkNamespaces.Current + 1);

        Assert.Equal(NetworkNamespaces.Current, here.NetworkNamespace);
        Assert.NotEqual(here.Directory, there.Directory);
        Assert.NotEqual(here.LockPath, there.LockPath);
        Assert.Equal(Path.Combine(_root, $"dup@{NetworkNamespaces.Current}"), here.Directory);
    }

    [Fact]
    public void The_network_namespace_of_this_process_is_the_inode_proc_names()
    {
        var link = File.ResolveLinkTarget("/proc/self/ns/net", returnFinalTarget: false)!.Name;

        Assert.Equal($"net:[{NetworkNamespaces.Current}]", link);
        Assert.True(NetworkNamespaces.Exists(NetworkNamespaces.Current));
    }

    [Theory]
    [InlineData("dup@4026531840", true)]
    [InlineData("dup", false)]
    [InlineData("dup@", false)]
    [InlineData("Dup@1", false)]
    [InlineData(".deploy-1-2.json", false)]
    [InlineData("a@b@3", false)]
    public void Only_directory_names_of_the_form_name_at_inode_are_namespaces(string directory, bool parsed)
    {
        Assert.Equal(parsed, StateStore.TryParseDirectoryName(directory, out var name, out var netns));
        if (parsed)
        {
            Assert.Equal("dup", name.Value);
            Assert.Equal(4026531840UL, netns);
        }
    }

    [Fact(Timeout = 10000)]
    public async Task The_state_of_a_network_namespace_that_is_gone_is_removed_and_live_ones_are_kept()
    {
        var gone = new StateStore(_root, Dup, 111);
        var kept = new StateStore(_root, Dup, 222);
        var mine = new StateStore(_root, Dup);
        foreach (var store in new[] { gone, kept, mine })
        {
            using var held = await store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None);
            held.Write(NamespaceState.Empty(Dup));
        }

        var removed = StateStore.RemoveGoneNetworkNamespaces(_root, netns => netns == 222);

        Assert.Equal([gone.Directory], removed);
        Assert.False(gone.Exists);
        Assert.True(kept.Exists);
        Assert.True(mine.Exists);
        Assert.Equal([222UL, NetworkNamespaces.Current], StateStore.List(_root).Select(e => e.NetworkNamespace).Order());
    }
}
