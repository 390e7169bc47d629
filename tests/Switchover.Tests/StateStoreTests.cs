using Switchover.State;

namespace Switchover.Tests;

public sealed class StateStoreTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-state-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact(Timeout = 10000)]
    public async Task The_lock_is_exclusive_and_a_waiter_times_out_with_a_clear_message()
    {
        var store = new StateStore(_root, NamespaceName.Parse("locks"));
        using var held = await store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None);

        var error = await Assert.ThrowsAsync<StateException>(() => store.LockAsync(TimeSpan.FromMilliseconds(200), CancellationToken.None));
        Assert.Contains("Another deploy of this namespace is in progress", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task A_lock_taken_on_a_lock_file_that_was_deleted_meanwhile_is_not_kept()
    {
        var store = new StateStore(_root, NamespaceName.Parse("gone"));
        var first = await store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None);
        var waiterStore = new StateStore(_root, NamespaceName.Parse("gone"));
        waiterStore.LockFileOpenedForTesting = () =>
        {
            // The last generation leaves between the waiter's open and its flock.
            waiterStore.LockFileOpenedForTesting = null;
            first.DeleteNamespace();
            first.Dispose();
        };

        using var second = await waiterStore.LockAsync(TimeSpan.FromSeconds(5), CancellationToken.None);

        Assert.True(File.Exists(store.LockPath));
        await Assert.ThrowsAsync<StateException>(() => store.LockAsync(TimeSpan.FromMilliseconds(200), CancellationToken.None));
    }

    [Fact(Timeout = 10000)]
    public async Task State_round_trips_and_is_replaced_atomically()
    {
        var store = new StateStore(_root, NamespaceName.Parse("rt"));
        var state = NamespaceState.Empty(store.Name).With(HandoffTableTests.Generation(3, GenerationState.Active, (8080, 40001))) with { LastGenerationId = 3 };
        using (var held = await store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None))
        {
            held.Write(state);
        }

        var read = store.ReadUnlocked()!;
        Assert.Equal(3, read.LastGenerationId);
        Assert.Equal(state.Generations.Single() with { Ports = [] }, read.Generations.Single() with { Ports = [] });
        Assert.Equal(state.Generations.Single().Ports, read.Generations.Single().Ports);
        Assert.False(File.Exists(store.StatePath + ".tmp"));
    }

    [Fact(Timeout = 10000)]
    public async Task An_unwritable_state_directory_gives_a_clear_error()
    {
        var store = new StateStore("/proc/switchover-cannot-exist", NamespaceName.Parse("x"));
        var error = await Assert.ThrowsAsync<StateException>(() => store.LockAsync(TimeSpan.FromSeconds(1), CancellationToken.None));
        Assert.Contains("Switchover:StateDirectory", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_state_file_of_another_namespace_is_treated_as_corrupt()
    {
        var store = new StateStore(_root, NamespaceName.Parse("mine"));
        Directory.CreateDirectory(store.Directory);
        File.WriteAllText(store.StatePath, """{"version":1,"namespace":"other","lastGenerationId":0,"generations":[]}""");
        Assert.Throws<StateException>(() => store.ReadUnlocked());
    }
}
