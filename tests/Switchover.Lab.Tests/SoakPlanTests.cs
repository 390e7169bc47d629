namespace Switchover.Lab.Tests;

/// <summary>The soak's plan: one seeded Random decides every round, so a seed replays the plan.</summary>
public sealed class SoakPlanTests
{
    [Fact]
    public void The_same_seed_gives_the_same_faults_steps_and_delays()
    {
        Assert.Equal(SoakPlan.Rounds(1234).Take(50), SoakPlan.Rounds(1234).Take(50));
    }

    [Fact]
    public void Different_seeds_give_different_plans()
    {
        Assert.NotEqual(SoakPlan.Rounds(1).Take(20), SoakPlan.Rounds(2).Take(20));
    }

    [Fact]
    public void Every_round_lands_at_a_step_its_fault_can_take_and_waits_at_most_the_longest_delay()
    {
        var rounds = SoakPlan.Rounds(7).Take(2000).ToList();

        Assert.Equal(Enumerable.Range(1, 2000), rounds.Select(r => r.Round));
        Assert.All(rounds, r => Assert.Contains(r.Step, SoakPlan.StepsOf(r.Fault)));
        Assert.All(rounds, r => Assert.InRange(r.Delay, TimeSpan.Zero, SoakPlan.MaxDelay));
        Assert.Equal(Enum.GetValues<SoakFault>().Length, rounds.Select(r => r.Fault).Distinct().Count());
        Assert.Equal(Enum.GetValues<SoakStep>().Length, rounds.Select(r => r.Step).Distinct().Count());
    }

    [Fact]
    public void A_round_reads_as_its_fault_step_and_delay()
    {
        Assert.Equal("round 3: SIGKILL new at took over +42 ms", new SoakRoundPlan(3, SoakFault.KillNew, SoakStep.TookOver, TimeSpan.FromMilliseconds(42)).ToString());
    }
}
