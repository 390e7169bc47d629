namespace Switchover.Lab.Tests;

/// <summary>Which failed requests a fault explains: only those in its window, and only when it killed a serving process.</summary>
public sealed class FailureAttributionTests
{
    private static readonly DateTime Injected = new(2026, 12, 1, 12, 0, 0, DateTimeKind.Utc);
    private static readonly DateTime Recovered = Injected.AddSeconds(2);

    private static LoadFailure At(DateTime when) => new(when, TimeSpan.Zero, "network-v4", RequestOutcome.ConnectionRefused, "refused");

    [Fact]
    public void A_failure_between_the_kill_and_a_second_after_the_recovery_is_attributed_to_the_kill()
    {
        var window = new FaultWindow("kill", Injected, Recovered, "killed");

        var attributed = FailureAttribution.Attribute([At(Injected.AddMilliseconds(-40)), At(Injected.AddSeconds(1)), At(Recovered.AddMilliseconds(900))], [window]);

        Assert.All(attributed, f => Assert.Same(window, f.Window));
    }

    [Fact]
    public void A_failure_before_the_fault_or_well_after_the_recovery_is_unattributed()
    {
        var window = new FaultWindow("kill", Injected, Recovered, "killed");

        var attributed = FailureAttribution.Attribute([At(Injected.AddMilliseconds(-200)), At(Recovered.AddSeconds(2))], [window]);

        Assert.All(attributed, f => Assert.False(f.Attributed));
    }

    [Fact]
    public void A_failure_in_the_window_of_a_fault_that_killed_nothing_serving_is_unattributed()
    {
        var stopped = new FaultWindow("SIGSTOP", Injected, Recovered, KilledServing: null);

        var attributed = FailureAttribution.Attribute([At(Injected.AddSeconds(1))], [stopped]);

        Assert.False(Assert.Single(attributed).Attributed);
    }

    [Fact]
    public void A_failure_goes_to_the_window_that_holds_it()
    {
        var first = new FaultWindow("round 1", Injected, Recovered, "killed");
        var second = new FaultWindow("round 2", Injected.AddSeconds(10), Recovered.AddSeconds(10), "killed");

        var attributed = FailureAttribution.Attribute([At(Injected.AddSeconds(11))], [first, second]);

        Assert.Same(second, Assert.Single(attributed).Window);
    }

    [Theory]
    [InlineData(true, false, false, false)] // the new one before its takeover served nothing
    [InlineData(true, false, true, true)]
    [InlineData(false, true, false, true)] // the previous one was the only server
    [InlineData(false, true, true, true)] // it drained requests in flight
    [InlineData(true, true, false, true)]
    [InlineData(false, false, true, false)]
    public void Only_a_kill_of_a_serving_generation_may_fail_requests(bool killedNew, bool killedOld, bool newServes, bool mayFail)
    {
        Assert.Equal(mayFail, FailureAttribution.KilledServing(killedNew, killedOld, newServes) is not null);
    }
}
