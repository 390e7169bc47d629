using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// A short soak with a fixed seed, so that CI runs the code of the load suite's randomized soak
/// (<c>dotnet run -c Release --project load -- --scenarios soak</c>, see docs/fault-injection.md) in the same lab under the same load.
/// </summary>
public sealed class SoakTests(ITestOutputHelper output) : TestBase(output)
{
    // Its six rounds: SIGKILL both at ready, SIGKILL new at draining, nft refusing from the launch, the state directory
    // full from the launch, nft refusing from "registered" (the takeover), SIGKILL old at draining. No hanging nft
    // (about 40 s a round) and no SIGSTOP (5 s), to keep the test near a minute.
    private const int Seed = 26;
    private const int Rounds = 6;

    [Fact(Timeout = 200_000)]
    public async Task A_fixed_seed_soak_fails_no_request_that_a_kill_does_not_explain_and_leaves_the_invariant_holding_after_every_round()
    {
        var result = await Soak.RunAsync(Lab, new SoakOptions
        {
            Seed = Seed,
            Rounds = Rounds,
            MaxDuration = TimeSpan.FromMinutes(3),
            ReplayCommand = $"dotnet run -c Release --project load -- --scenarios soak --seed {Seed} --soak-rounds {Rounds}",
            Log = Output.WriteLine,
        }, Token);
        Output.WriteLine(result.ToMarkdown());

        Assert.Equal(SoakPlan.Rounds(Seed).Take(Rounds), result.Rounds.Select(r => r.Plan));
        Assert.Empty(result.Problems);
        Assert.Equal(0, result.Violations);
        Assert.Equal(0, result.Unattributed);
        Assert.True(result.Requests > 0, "The soak's load sent no request.");

        // The plan kills serving generations, so the attribution has something to explain: a soak that attributes
        // nothing here did not measure what it claims.
        Assert.True(result.Attributed > 0, "No failed request was attributed, although the plan kills serving generations.");
        Assert.True(result.Passed, result.Headline);
    }
}
