using System.Globalization;
using System.Net;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>What is done to the generations at a step of the handoff.</summary>
public enum Fault
{
    /// <summary>SIGKILL of the new generation (v2).</summary>
    KillNew,

    /// <summary>SIGKILL of the previous generation (v1).</summary>
    KillOld,

    /// <summary>SIGKILL of both.</summary>
    KillBoth,

    /// <summary>SIGSTOP of the new generation, SIGCONT 5 s later.</summary>
    StopNew,
}

/// <summary>Where in the handoff the fault is injected, as the generations' own log lines mark it.</summary>
public enum HandoffStep
{
    /// <summary>v2 is recorded Starting: its private ports are guarded, nothing is sent to it.</summary>
    Registered,

    /// <summary>
    /// v2 passed its health checks and its readiness request and holds the lock (a test pause at the takeover's start);
    /// the transaction is next. Its log line alone raced: one CI run killed v2 a few milliseconds after it, when its
    /// transaction was already applied, and the test counted the requests sent to it as not attributable.
    /// </summary>
    Ready,

    /// <summary>Inside the takeover (a test pause, <c>SWITCHOVER_TEST_PAUSE_AT</c>): the kernel steers to v2, the state still says v1 (pending mark), the lock is held.</summary>
    TransactionApplied,

    /// <summary>Inside the takeover (a test pause): the state says v2 is active and v1 draining; v1 was not told yet.</summary>
    StateWritten,

    /// <summary>Inside the takeover (a test pause): v1 was signalled; v2 has not logged its takeover yet.</summary>
    OldSignalled,

    /// <summary>v2 took over: the transaction is applied, the state written, v1 signalled.</summary>
    TookOver,

    /// <summary>v1 heard it was superseded and drains (in its rollback window).</summary>
    Draining,
}

/// <summary>
/// The deterministic part of the fault-injection suite: under load (a new connection per request, all four paths),
/// each fault at each step of a handoff from v1 to v2. After each: the namespace settles (a generation still alive
/// finishes what it was doing; the next operation, here <c>switchover status</c>, reconciles what no process watched),
/// the invariant checker (state, kernel table, live processes, listening sockets) must hold, the next deploy (v3) must
/// take over, and every failed request must be attributed: it falls between the fault and the recovery, and the fault
/// killed a process that was serving (in flight on it, or sent while no live generation held the port). A fault that
/// kills nothing that serves (v2 before its takeover, SIGSTOP) may fail no request.
/// </summary>
public sealed class FaultInjectionTests(ITestOutputHelper output) : TestBase(output)
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(30);

    public static TheoryData<Fault, HandoffStep> Cases()
    {
        var data = new TheoryData<Fault, HandoffStep>();
        foreach (var fault in Enum.GetValues<Fault>())
        {
            foreach (var step in Enum.GetValues<HandoffStep>())
            {
                // Inside the takeover the pause has stopped v2 already; SIGSTOP for 5 s there is holding it 5 s more.
                data.Add(fault, step);
            }
        }

        return data;
    }

    [Theory(Timeout = 180_000)]
    [MemberData(nameof(Cases))]
    public async Task A_fault_at_a_step_of_the_handoff_leaves_the_invariant_holding_the_next_deploy_working_and_only_attributed_failures(Fault fault, HandoffStep step)
    {
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { RollbackWindow = TimeSpan.FromSeconds(5) });
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromSeconds(120)), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);

        var pause = PausePoint(step);
        var v2 = service.Launch("v2", environment: pause is null ? null : new Dictionary<string, string> { [PauseVariable] = pause });
        var marker = step switch
        {
            HandoffStep.Registered => (v2, "registered (pid"),
            HandoffStep.TookOver => (v2, "launch to serving"),
            HandoffStep.Draining => (v1.Process, "drains: listeners stay open"),
            _ => (v2, $"{PauseVariable}={pause}"),
        };
        await marker.Item1.WaitForOutputAsync(marker.Item2, TakeoverTimeout, Token);
        if (pause is not null)
        {
            await v2.WaitUntilStoppedAsync(TimeSpan.FromSeconds(5), Token);
        }

        var injectedAt = DateTime.UtcNow;
        var killsServing = Inject(fault, step, v1.Process, v2);
        if (pause is not null && !v2.HasExited && fault == Fault.KillOld)
        {
            v2.SendSignal(Signals.Continue);
        }
        if (fault == Fault.StopNew)
        {
            await Task.Delay(TimeSpan.FromSeconds(5), Token);
            v2.SendSignal(Signals.Continue);
        }

        // Settle: whatever is alive finishes its step (v2 takes over or fails, v1 rolls back or drains on).
        await SettleAsync(service, v2);

        // v2 killed between its transaction and v1's signal: v1, still active, finds it dead and repairs by itself,
        // within its poll (0.5 s), before any other command touches the namespace.
        var selfRepairs = fault == Fault.KillNew && step is HandoffStep.TransactionApplied or HandoffStep.StateWritten;
        var beforeRepair = selfRepairs
            ? await service.WaitForInvariantAsync(TimeSpan.FromSeconds(3), Token)
            : await service.CheckInvariantAsync(Token);
        var status = await service.CliAsync(Token, "status", "--namespace", service.Name);
        var invariant = await service.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        var recoveredAt = DateTime.UtcNow;
        Output.WriteLine($"before the repair: {beforeRepair}\nstatus: {status.StandardOutput}{status.StandardError}\nafter: {invariant}");

        var v3 = await service.DeployAsync("v3", TakeoverTimeout, Token);
        if (fault == Fault.KillBoth)
        {
            // Nothing was left to serve: the recovery is v3's takeover.
            recoveredAt = DateTime.UtcNow;
        }

        var afterDeploy = await service.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);
        var result = await load.StopAsync(Token);
        var answer = (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim();

        var window = new FaultWindow($"{fault} at {step}", injectedAt, recoveredAt, killsServing);
        var unattributed = FailureAttribution.Attribute(result.Failures, [window]).Where(f => !f.Attributed).Select(f => f.Failure).ToList();
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"fault-injection: {fault} at {step}: {result.TotalRequests} requests, {result.FailureCount} failed " +
            $"({(result.FailureCount == 0 ? "none" : killsServing ?? "the fault killed nothing that served")}; {unattributed.Count} unattributed), " +
            $"invariant before the repair {(beforeRepair.Holds ? "held" : $"violated ({beforeRepair.Violations.Count})")}, " +
            $"violations after the repair {invariant.Violations.Count}, after v3 {afterDeploy.Violations.Count}"));
        foreach (var failure in result.Failures.Take(10))
        {
            Output.WriteLine(failure.ToString());
        }

        if (selfRepairs)
        {
            // Held with no command run, so v1, the only live process, repaired. Which of its paths did is not asserted:
            // one CI run had the invariant held without log id 68 in v1's captured output, unexplained.
            beforeRepair.ThrowIfViolated();
        }

        invariant.ThrowIfViolated();
        afterDeploy.ThrowIfViolated();
        Assert.Equal($"v3 {v3.Process.Pid}", answer);
        Assert.True(result.TotalRequests > 0, "The load run sent no request.");
        Assert.True(unattributed.Count == 0,
            $"{unattributed.Count} of {result.FailureCount} failed requests are not attributed to {fault} at {step} " +
            $"({killsServing ?? "it killed nothing that served"}; window {injectedAt:HH:mm:ss.fff} to {recoveredAt:HH:mm:ss.fff}):\n{string.Join('\n', unattributed.Take(10))}");
    }

    /// <summary>
    /// Faults of the host rather than of a generation: nft refusing every change or hanging on the takeover (a shim
    /// given to v2 as Switchover:NftPath), the state directory full (a 64 KiB tmpfs filled up) or read-only (remounted
    /// ro), and two deploys at once. v1 must serve on with no failed request, the invariant must hold once the
    /// fault is gone, and the next deploy must work.
    /// </summary>
    [Theory(Timeout = 180_000)]
    [InlineData("nft-refuses")]
    [InlineData("nft-hangs-at-takeover")]
    [InlineData("state-directory-full")]
    [InlineData("state-directory-read-only")]
    [InlineData("two-deploys-at-once")]
    public async Task A_host_fault_during_a_deploy_fails_that_deploy_alone_and_the_running_generation_serves_on(string fault)
    {
        var scratch = Directory.CreateTempSubdirectory("switchover-fault-").FullName;
        var stateRoot = Path.Combine(scratch, "state");
        Directory.CreateDirectory(stateRoot);
        var mounted = fault.StartsWith("state-directory", StringComparison.Ordinal);
        // Tracked before the service, so disposed after it: the generations stop before their state directory goes.
        Track(new Scratch(scratch, mounted ? stateRoot : null));
        if (mounted)
        {
            // In this process's mount namespace (ip netns exec gives each command a private one of its own).
            await OnHostAsync("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "switchover-fault", stateRoot);
        }

        await RunHostFaultAsync(fault, scratch, stateRoot);
    }

    /// <summary>Runs a program in this process's own namespaces (not a lab host's); throws on a non-zero exit.</summary>
    private static async Task OnHostAsync(string program, params string[] arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments) { RedirectStandardError = true })!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited {process.ExitCode}: {error}");
        }
    }

    private async Task RunHostFaultAsync(string fault, string scratch, string stateRoot)
    {
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { StateRoot = stateRoot });
        var v1 = await service.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromSeconds(150)), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);

        string expectation;
        var shim = Path.Combine(scratch, "nft-shim");
        switch (fault)
        {
            case "nft-refuses":
            case "nft-hangs-at-takeover":
                // Checks (--check) pass through; the refusing shim fails every change; the hanging one lets the
                // register's change through and hangs on the next (the takeover) until NftClient's 15 s timeout kills it.
                await File.WriteAllTextAsync(shim, fault == "nft-refuses"
                    ? "#!/bin/sh\n[ \"$1\" = --check ] && exec nft \"$@\"\ncat > /dev/null\necho 'Error: injected: nft refuses' >&2\nexit 1\n"
                    : $"#!/bin/sh\n[ \"$1\" = --check ] && exec nft \"$@\"\nif [ -e {scratch}/applied ]; then exec sleep 60; fi\ntouch {scratch}/applied\nexec nft \"$@\"\n", Token);
                if (OperatingSystem.IsLinux())
                {
                    File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                }

                var v2 = service.Launch("v2", [$"--Switchover:NftPath={shim}"]);
                Assert.Equal(1, await ExitsWithinAsync(v2, TimeSpan.FromSeconds(90)));
                expectation = v2.Output.Contains("injected: nft refuses", StringComparison.Ordinal) ? "v2 exited 1: nft refused" : "v2 exited 1 after the hung nft was killed";
                Output.WriteLine(v2.Output);
                break;
            case "state-directory-full":
                await Lab.Server.TryRunAsync("dd", ["if=/dev/zero", $"of={stateRoot}/filler", "bs=4k"], Token);
                Assert.True(new DriveInfo(stateRoot).AvailableFreeSpace < 4096, "The state directory's tmpfs did not fill up.");
                var full = service.Launch("v2");
                Assert.Equal(1, await ExitsWithinAsync(full, TimeSpan.FromSeconds(90)));
                File.Delete(Path.Combine(stateRoot, "filler"));
                expectation = "v2 exited 1: the state could not be written";
                Output.WriteLine(full.Output);
                break;
            case "state-directory-read-only":
                await OnHostAsync("mount", "-o", "remount,ro", stateRoot);
                var readOnly = service.Launch("v2");
                Assert.Equal(1, await ExitsWithinAsync(readOnly, TimeSpan.FromSeconds(90)));
                await OnHostAsync("mount", "-o", "remount,rw", stateRoot);
                expectation = "v2 exited 1: the state directory is read-only";
                Output.WriteLine(readOnly.Output);
                break;
            default:
                // Two at once: each takes over in turn or steps aside; the namespace ends with the newest one active.
                var a = service.Launch("v2");
                var b = service.Launch("v2b");
                await Task.WhenAll(TakenOverOrExitedAsync(a), TakenOverOrExitedAsync(b));
                var active = service.ReadState()!.Active!;
                Assert.Contains(active.Pid, new[] { a.Pid, b.Pid });
                Assert.Equal(active.Id, service.ReadState()!.Generations.Max(g => g.Id));
                expectation = $"both launched together; generation {active.Id} (pid {active.Pid}) active";
                break;
        }

        // A generation whose nft keeps hanging cannot clean up after itself; the next operation reconciles (here: status).
        var beforeRepair = await service.CheckInvariantAsync(Token);
        var status = await service.CliAsync(Token, "status", "--namespace", service.Name, "--state-dir", stateRoot);
        Output.WriteLine($"before the repair: {beforeRepair}\nstatus: {status.StandardOutput}{status.StandardError}");
        var invariant = await service.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        var v1ServedOn = !v1.Process.HasExited;
        var v3 = await service.DeployAsync("v3", TakeoverTimeout, Token);
        var afterDeploy = await service.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);
        var result = await load.StopAsync(Token);
        var answer = (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim();
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"fault-injection: {fault}: {result.TotalRequests} requests, {result.FailureCount} failed; {expectation}; " +
            $"invariant before the repair {(beforeRepair.Holds ? "held" : $"violated ({beforeRepair.Violations.Count})")}, " +
            $"violations after the repair {invariant.Violations.Count}, after v3 {afterDeploy.Violations.Count}"));
        Output.WriteLine(invariant.ToString());

        invariant.ThrowIfViolated();
        afterDeploy.ThrowIfViolated();
        Assert.Equal($"v3 {v3.Process.Pid}", answer);
        AssertNoFailures(result);
        Assert.True(v1ServedOn || fault == "two-deploys-at-once", "v1 must serve on until v3 supersedes it.");
    }

    private async Task TakenOverOrExitedAsync(LabProcess generation)
    {
        var deadline = DateTime.UtcNow + TakeoverTimeout;
        while (!generation.HasExited && !generation.Output.Contains("launch to serving", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"pid {generation.Pid} neither took over nor exited:\n{generation.Output}");
            await Task.Delay(100, Token);
        }
    }

    /// <summary>Removes the test's scratch directory, after unmounting its tmpfs (made writable first) when it has one.</summary>
    private sealed class Scratch(string path, string? mount) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            if (mount is not null)
            {
                await OnHostAsync("mount", "-o", "remount,rw", mount);
                await OnHostAsync("umount", mount);
            }

            Directory.Delete(path, recursive: true);
        }
    }

    private const string PauseVariable = "SWITCHOVER_TEST_PAUSE_AT";

    /// <summary>The test pause (<c>SWITCHOVER_TEST_PAUSE_AT</c>) that marks a step inside the takeover; null for a step a log line marks.</summary>
    private static string? PausePoint(HandoffStep step) => step switch
    {
        HandoffStep.Ready => "takeover-begun",
        HandoffStep.TransactionApplied => "transaction-applied",
        HandoffStep.StateWritten => "state-written",
        HandoffStep.OldSignalled => "old-signalled",
        _ => null,
    };

    /// <summary>Injects the fault; returns why requests may fail (the serving process it killed), or null when none may.</summary>
    private static string? Inject(Fault fault, HandoffStep step, LabProcess v1, LabProcess v2)
    {
        if (fault == Fault.StopNew)
        {
            v2.SendSignal(Signals.Stop);
            return null;
        }

        // Before v2's transaction only v1 serves; from the transaction on, the kernel sends new connections to v2 and v1
        // drains its connections (whether or not it was told yet).
        var v2Serves = step is not (HandoffStep.Registered or HandoffStep.Ready);
        var reason = FailureAttribution.Kill(v1, v2, fault is Fault.KillNew or Fault.KillBoth, fault is Fault.KillOld or Fault.KillBoth, v2Serves);
        return fault == Fault.KillNew && (step is HandoffStep.TransactionApplied or HandoffStep.StateWritten)
            ? "sent to v2 (killed) before v1 was told of the takeover: until v1 found v2 dead and repaired (0.5 s poll)"
            : reason;
    }

    /// <summary>Until v2 has taken over, or failed, or is gone, and the namespace has nothing starting (bounded).</summary>
    private async Task SettleAsync(SwitchoverService service, LabProcess v2)
    {
        if (!await service.SettleAsync(v2, Settle, Token))
        {
            Assert.Fail($"v2 neither took over nor exited within {Settle.TotalSeconds:0} s:\n{v2.Output}");
        }
    }
}
