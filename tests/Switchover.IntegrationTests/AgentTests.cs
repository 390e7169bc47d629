using System.Globalization;
using System.Net;
using Switchover.Lab;
using Switchover.State;

namespace Switchover.IntegrationTests;

/// <summary>
/// Generations that run as <c>nobody</c> with no capability at all, handing off through a real <c>switchover agent</c>
/// process in the lab's server namespace: the agent applies the tables, marks their listeners transparent, counts their
/// flows and signals the generation they supersede; the policy decides who may do what.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class AgentTests(ITestOutputHelper output) : TestBase(output)
{
    private const string Nobody = "65534";
    private const string Stranger = "1234";
    private const int OtherPort = 9090;

    private SwitchoverAgent Agent { get; set; } = null!;

    [Fact(Timeout = 240_000)]
    public async Task An_app_running_as_nobody_with_no_capabilities_hands_off_under_load_through_the_agent_with_no_failure()
    {
        var app = await StartAsync();
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        AssertUnprivileged(v1.Process.Pid);
        var generations = new List<LaunchedGeneration> { v1 };
        await using var keepAlive = HttpLoad.Start(AllPaths(), Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(3)), Token);
        await using var newConnections = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromMinutes(3)), Token);
        await Task.Delay(TimeSpan.FromSeconds(1), Token);

        for (var version = 2; version <= 4; version++)
        {
            var next = await app.DeployAsync($"v{version.ToString(CultureInfo.InvariantCulture)}", TakeoverTimeout, Token);
            AssertUnprivileged(next.Process.Pid);
            generations.Add(next);
            await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        }

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        AssertNoFailures(await keepAlive.StopAsync(Token));
        AssertNoFailures(await newConnections.StopAsync(Token));

        // Superseded generations drained (their conntrack counts came through the agent) and left by themselves.
        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
            Assert.Contains("drained in", old.Process.Output, StringComparison.Ordinal);
        }

        Assert.Equal(generations[^1].Process.Pid, app.ReadState()!.Active!.Pid);
        Assert.Contains($"(namespace '{app.Name}') marked IP_TRANSPARENT", Agent.Log, StringComparison.Ordinal);
        Assert.Contains($"namespace '{app.Name}': generation 3 -> 4", Agent.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("refused", Agent.Log, StringComparison.Ordinal);
    }

    [Fact(Timeout = 180_000)]
    public async Task A_second_user_claiming_the_namespace_or_its_public_port_is_refused_with_a_reason_and_a_log_line_and_nothing_changes()
    {
        var app = await StartAsync();
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        var table = await app.TableAsync(Token);
        var state = await File.ReadAllBytesAsync(Path.Combine(app.StateDirectory, "state.json"), Token);
        var tables = await TablesAsync();

        // Another user, the same namespace.
        var intruder = Track(ServiceAs(app.AppPath, app.Name, Stranger));
        var sameNamespace = intruder.Launch("intruder");
        Assert.Equal(1, await ExitsWithinAsync(sameNamespace, TimeSpan.FromSeconds(60)));
        var namespaceRefusal = $"uid {Stranger} (gid {Stranger}) may not use namespace '{app.Name}': the agent policy {Agent.PolicyPath} gives it to uid {Nobody} only.";
        Assert.Contains("The Switchover agent refused: " + namespaceRefusal, sameNamespace.Output, StringComparison.Ordinal);
        // Its first request, marking its private listener IP_TRANSPARENT while Kestrel binds, is the one refused.
        Assert.Contains($"refused transparent from pid {sameNamespace.Pid} uid {Stranger} gid {Stranger}: {namespaceRefusal}", Agent.Log, StringComparison.Ordinal);

        // Another user, its own namespace, but the public port of the first.
        var other = Track(ServiceAs(app.AppPath, "o" + app.Name[1..], Stranger));
        var samePort = other.Launch("port-thief");
        Assert.Equal(1, await ExitsWithinAsync(samePort, TimeSpan.FromSeconds(60)));
        var portRefusal = $"namespace '{other.Name}' may not take over public port {PublicPort}: it belongs to namespace '{app.Name}' in the agent policy {Agent.PolicyPath}";
        Assert.Contains(portRefusal, samePort.Output, StringComparison.Ordinal);
        Assert.Contains($"refused register from pid {samePort.Pid} uid {Stranger} gid {Stranger}: {portRefusal}", Agent.Log, StringComparison.Ordinal);

        Assert.Equal(table, await app.TableAsync(Token));
        Assert.Equal(state, await File.ReadAllBytesAsync(Path.Combine(app.StateDirectory, "state.json"), Token));
        Assert.Equal(tables, await TablesAsync());
        Assert.False(Directory.Exists(other.StateDirectory), $"{other.StateDirectory} was created for a refused namespace.");
        var (status, body) = await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token);
        Assert.Equal((200, $"v1 {v1.Process.Pid}"), (status, body.Trim()));
    }

    [Fact(Timeout = 240_000)]
    public async Task The_agent_killed_and_started_again_mid_deploy_loses_no_request_and_watches_every_generation_again()
    {
        // The first agent stops itself when v2's takeover has begun, before it changes anything: killed there, it dies
        // before v2 takes over for certain (v2 gets ready while it registers, so waiting for "registered" raced the takeover).
        var app = await StartAsync(new Dictionary<string, string> { ["SWITCHOVER_TEST_PAUSE_AT"] = "takeover-begun" });
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromMinutes(3)), Token);
        await Task.Delay(TimeSpan.FromSeconds(1), Token);

        // v2 registers through the first agent; the agent dies before v2 takes over; v2's takeover waits for the next one.
        var v2 = app.Launch("v2");
        await v2.WaitForOutputAsync("registered", TakeoverTimeout, Token);
        var first = Agent.Process;
        await first.WaitForOutputAsync("SWITCHOVER_TEST_PAUSE_AT=takeover-begun", TakeoverTimeout, Token);
        await first.WaitUntilStoppedAsync(TimeSpan.FromSeconds(5), Token);
        await Agent.KillAsync();
        await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        await Agent.StartAgainAsync(Token);
        await v2.WaitForOutputAsync("launch to serving", TakeoverTimeout, Token);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(40)));
        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        AssertNoFailures(await load.StopAsync(Token));

        Assert.DoesNotContain("generation 1 -> 2", first.Output, StringComparison.Ordinal);
        Assert.Contains($"namespace '{app.Name}': generation 1 -> 2 (pid {v2.Pid})", Agent.Process.Output, StringComparison.Ordinal);

        // Killed and started again once more, with nothing asked of it since: the new agent holds v2's pidfd although
        // it never saw v2 at all, and v2's death is repaired at once.
        await Agent.KillAsync();
        await Agent.StartAgainAsync(Token);
        Assert.Contains($"watching generation 2 (pid {v2.Pid}", Agent.Process.Output, StringComparison.Ordinal);
        v2.Kill();
        await Agent.Process.WaitForOutputAsync($"namespace '{app.Name}': repaired", TimeSpan.FromSeconds(10), Token);
        Assert.Contains($"generation 2 (pid {v2.Pid}) died while Active", Agent.Process.Output, StringComparison.Ordinal);
        Assert.Null(await app.TableAsync(Token));
        Assert.False(Directory.Exists(app.StateDirectory));
    }

    public static TheoryData<HandoffStep> AgentSteps() => new(HandoffStep.Registered, HandoffStep.Ready, HandoffStep.TransactionApplied,
        HandoffStep.StateWritten, HandoffStep.OldSignalled, HandoffStep.Draining);

    /// <summary>
    /// The fault suite's agent row: SIGKILL of the agent at each step of a handoff from v1 to v2 under load (new
    /// connections on all four paths), and the agent started again 1.5 s later. The steps inside the takeover are test
    /// pauses of the agent (SWITCHOVER_TEST_PAUSE_AT, in the first agent's environment only). The agent serves nothing,
    /// so no request may fail; v2 takes over (its request is sent again to the new agent), v1 hears that it was
    /// superseded and drains and exits, the invariant holds without any other operation, and v3 takes over.
    /// </summary>
    [Theory(Timeout = 180_000)]
    [MemberData(nameof(AgentSteps))]
    public async Task The_agent_killed_at_a_step_of_the_handoff_and_started_again_fails_no_request_and_leaves_the_namespace_settled(HandoffStep step)
    {
        var pause = step switch
        {
            HandoffStep.TransactionApplied => "transaction-applied",
            HandoffStep.StateWritten => "state-written",
            HandoffStep.OldSignalled => "old-signalled",
            _ => null,
        };
        var app = await StartAsync(pause is null ? null : new Dictionary<string, string> { ["SWITCHOVER_TEST_PAUSE_AT"] = pause });
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        await using var load = HttpLoad.Start(AllPaths(), Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromMinutes(2)), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);

        var v2 = app.Launch("v2");
        var (marked, text) = step switch
        {
            HandoffStep.Registered => (v2, "registered (pid"),
            HandoffStep.Ready => (v2, "is ready after"),
            HandoffStep.Draining => (v1.Process, "drains: listeners stay open"),
            _ => (Agent.Process, $"SWITCHOVER_TEST_PAUSE_AT={pause}"),
        };
        await marked.WaitForOutputAsync(text, TakeoverTimeout, Token);
        if (pause is not null)
        {
            await Agent.Process.WaitUntilStoppedAsync(TimeSpan.FromSeconds(5), Token);
        }

        await Agent.KillAsync();
        await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        await Agent.StartAgainAsync(Token);

        // Settled: v2 took over, and v1 heard of it, drained and left.
        await v2.WaitForOutputAsync("launch to serving", TakeoverTimeout, Token);
        var v1Exit = await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(40));
        var invariant = await app.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        var v3 = await app.DeployAsync("v3", TakeoverTimeout, Token);
        var afterDeploy = await app.WaitForInvariantAsync(TimeSpan.FromSeconds(5), Token);
        await Task.Delay(TimeSpan.FromMilliseconds(500), Token);
        var result = await load.StopAsync(Token);
        var answer = (await GetAsync(Lab.Client, new IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body.Trim();
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"fault-injection: SIGKILL agent at {step}: {result.TotalRequests} requests, {result.FailureCount} failed, v1 exited {v1Exit}, " +
            $"violations once settled {invariant.Violations.Count}, after v3 {afterDeploy.Violations.Count}"));
        Output.WriteLine(Agent.Log);

        Assert.Equal(0, v1Exit);
        invariant.ThrowIfViolated();
        afterDeploy.ThrowIfViolated();
        Assert.Equal($"v3 {v3.Process.Pid}", answer);
        AssertNoFailures(result);
    }

    [Fact(Timeout = 180_000)]
    public async Task When_the_active_generation_is_killed_the_previous_one_serves_again_at_once_and_the_agent_repairs_the_namespace()
    {
        var app = await StartAsync();
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        var v2 = await app.DeployAsync("v2", TakeoverTimeout, Token);
        var target = new IPEndPoint(Lab.ServerV4, PublicPort);
        Assert.Equal($"v2 {v2.Process.Pid}", (await GetAsync(Lab.Client, target, "/", Token)).Body.Trim());

        v2.Process.Kill();
        var killed = System.Diagnostics.Stopwatch.StartNew();
        string? body = null;
        while (killed.Elapsed < TimeSpan.FromSeconds(5))
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(Token);
                attempt.CancelAfter(TimeSpan.FromSeconds(1));
                body = (await GetAsync(Lab.Client, target, "/", attempt.Token)).Body.Trim();
                if (body == $"v1 {v1.Process.Pid}")
                {
                    break;
                }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
            {
                // Refused until the repair: the killed generation's rule pointed at nothing.
            }

            await Task.Delay(20, Token);
        }

        Output.WriteLine($"v1 served again {killed.Elapsed.TotalMilliseconds:0} ms after v2 was killed");
        Assert.Equal($"v1 {v1.Process.Pid}", body);
        Assert.True(killed.Elapsed < TimeSpan.FromSeconds(2), $"v1 served again only after {killed.Elapsed.TotalMilliseconds:0} ms.");
        Assert.Contains($"generation 2 (pid {v2.Process.Pid}) died while Active", Agent.Log, StringComparison.Ordinal);

        // The table is applied before the state is written: the state says so a moment after v1 answers.
        for (var tries = 0; app.ReadState()?.Active?.Pid != v1.Process.Pid && tries < 50; tries++)
        {
            await Task.Delay(20, Token);
        }

        Assert.Equal(v1.Process.Pid, app.ReadState()!.Active!.Pid);

        var v3 = await app.DeployAsync("v3", TakeoverTimeout, Token);
        Assert.Equal($"v3 {v3.Process.Pid}", (await GetAsync(Lab.Client, target, "/", Token)).Body.Trim());
    }

    [Fact(Timeout = 120_000)]
    public async Task The_agent_serves_on_the_socket_systemd_passes_it()
    {
        var app = await StartAsync();
        await Agent.KillAsync();
        File.Delete(Agent.SocketPath);

        // systemd-socket-activate binds the socket and, on the first connection, execs the agent with it as descriptor 3
        // (LISTEN_FDS=1, LISTEN_PID): the generation's first request waits in the socket's queue until the agent runs.
        await Agent.StartAgainAsync(Token, ["systemd-socket-activate", "--listen", Agent.SocketPath], waitUntilListening: false);

        // What SocketMode=0666 does in samples/systemd/switchover-agent.socket (systemd-socket-activate has no such option).
        for (var tries = 0; !File.Exists(Agent.SocketPath) && tries < 100; tries++)
        {
            await Task.Delay(50, Token);
        }

        File.SetUnixFileMode(Agent.SocketPath, (UnixFileMode)0b110_110_110);
        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token);
        Assert.Equal(v1.Process.Pid, app.ReadState()!.Active!.Pid);
        Assert.Contains("listening on the socket systemd passed", Agent.Process.Output, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task The_agent_refuses_to_start_with_an_invalid_policy_and_says_what_is_wrong()
    {
        await StartAsync();
        await Agent.KillAsync();
        await File.WriteAllTextAsync(Agent.PolicyPath, """{ "namespaces": { "a": { "users": ["nobody"], "ports": [8080] }, "b": { "users": ["nobody"], "ports": [8080] } } }""", Token);
        var result = await Lab.Server.TryRunAsync("dotnet", [Artifacts.Cli, "agent", "--socket", Agent.SocketPath + ".2", "--policy", Agent.PolicyPath], Token);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"The agent policy {Agent.PolicyPath} is invalid; the agent does not start.", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("port 8080 is given to namespaces 'a' and 'b'; a public port belongs to one namespace.", result.StandardError, StringComparison.Ordinal);
        Assert.False(File.Exists(Agent.SocketPath + ".2"));
    }

    /// <summary>
    /// Starts the agent with a policy that gives the service's namespace (and port 8080) to nobody, and the namespace
    /// 'o...' (and port 9090) to <see cref="Stranger"/>; returns the service, whose generations run as nobody.
    /// </summary>
    private async Task<SwitchoverService> StartAsync(IReadOnlyDictionary<string, string>? agentEnvironment = null)
    {
        var name = "t" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 5));
        Agent = Track(await SwitchoverAgent.StartAsync(Lab.Server, Policy(name), Token, agentEnvironment));
        var appPath = ReadableByEveryone(Artifacts.TestServer, Agent.Directory);
        return Track(ServiceAs(appPath, name, Nobody));
    }

    /// <summary>A service whose every generation runs as <paramref name="uid"/> and talks to the agent of the test.</summary>
    private SwitchoverService ServiceAs(string appPath, string name, string uid) => new(Lab.Server, appPath, PublicPort, name)
    {
        RunAs = RunAs(uid),
        StateRoot = Agent.StateRoot,
        Arguments = [$"--Switchover:Agent={Agent.SocketPath}"],
    };

    private static Dictionary<string, (string[] Users, int[] Ports)> Policy(string name) => new()
    {
        [name] = ([Nobody], [PublicPort]),
        ["o" + name[1..]] = ([Stranger], [OtherPort]),
    };

    /// <summary>setpriv: that user and group, no supplementary groups, no capability in any set, no way to gain one.</summary>
    private static string[] RunAs(string uid) =>
        ["setpriv", $"--reuid={uid}", $"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"];

    private void AssertUnprivileged(int pid)
    {
        var status = File.ReadAllLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status");
        string Field(string name) => status.Single(l => l.StartsWith(name + ":", StringComparison.Ordinal))[(name.Length + 1)..].Trim();
        Output.WriteLine($"pid {pid}: Uid {Field("Uid")}, CapEff {Field("CapEff")}, CapBnd {Field("CapBnd")}");
        Assert.Equal($"{Nobody}\t{Nobody}\t{Nobody}\t{Nobody}", Field("Uid"));
        Assert.Equal("0000000000000000", Field("CapEff"));
        Assert.Equal("0000000000000000", Field("CapPrm"));
        Assert.Equal("0000000000000000", Field("CapBnd"));
    }

    private async Task<string> TablesAsync() => (await Lab.Server.RunAsync("nft", ["list", "tables"], Token)).StandardOutput;

    /// <summary>
    /// The app as a user without privileges can read it: in place when every directory above it lets others through
    /// and its files are world-readable (a checkout under /work), else a copy under <paramref name="scratch"/> (a clean
    /// clone under /root, mode 0700, as CI makes it). Either way the generations run the same build.
    /// </summary>
    private static string ReadableByEveryone(string appPath, string scratch)
    {
        var directory = Path.GetDirectoryName(appPath)!;
        if (OthersCanRead(directory))
        {
            return appPath;
        }

        var copy = Path.Combine(scratch, "app");
        foreach (var file in Directory.GetFiles(directory, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(copy, Path.GetRelativePath(directory, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
            File.SetUnixFileMode(target, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }

        foreach (var sub in Directory.GetDirectories(copy, "*", SearchOption.AllDirectories).Append(copy))
        {
            File.SetUnixFileMode(sub, (UnixFileMode)0b111_101_101);
        }

        return Path.Combine(copy, Path.GetFileName(appPath));
    }

    private static bool OthersCanRead(string directory)
    {
        for (var dir = new DirectoryInfo(directory); dir is not null; dir = dir.Parent)
        {
            if ((dir.UnixFileMode & UnixFileMode.OtherExecute) == 0)
            {
                return false;
            }
        }

        return new DirectoryInfo(directory).GetFiles().All(f => (f.UnixFileMode & UnixFileMode.OtherRead) != 0);
    }
}
