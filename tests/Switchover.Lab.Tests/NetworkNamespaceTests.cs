using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Processes;

namespace Switchover.Lab.Tests;

[Collection(NetnsTestGroup.Name)]
public sealed class NetworkNamespaceTests : IDisposable
{
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(50));

    private CancellationToken Timeout => _timeout.Token;

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 60_000)]
    public async Task A_socket_created_in_a_namespace_reaches_only_listeners_of_that_namespace()
    {
        await using var ns = await NetworkNamespace.CreateAsync("so-t", Timeout);

        // A listener in the root namespace: the test process's own.
        using var rootListener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        rootListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        rootListener.Listen();
        var rootEndPoint = (IPEndPoint)rootListener.LocalEndPoint!;

        using (var fromNamespace = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            var e = await Assert.ThrowsAsync<SocketException>(() => fromNamespace.ConnectAsync(rootEndPoint, Timeout).AsTask());
            Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
        }

        using var nsListener = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        nsListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        nsListener.Listen();
        using (var fromNamespace = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            var accept = nsListener.AcceptAsync(Timeout);
            await fromNamespace.ConnectAsync(nsListener.LocalEndPoint!, Timeout);
            using var accepted = await accept;
            Assert.Equal(fromNamespace.LocalEndPoint, accepted.RemoteEndPoint);
        }

        // And the other way round: a root socket does not see the namespace's listener.
        using var fromRoot = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connect = fromRoot.ConnectAsync(nsListener.LocalEndPoint!, Timeout).AsTask();
        var accepting = nsListener.AcceptAsync(Timeout).AsTask();
        await Task.WhenAny(connect, Task.Delay(500));
        Assert.False(accepting.IsCompletedSuccessfully, "the namespace listener accepted a connection from the root namespace");
    }

    [Fact(Timeout = 60_000)]
    public async Task Sockets_can_be_created_by_the_thousand()
    {
        await using var ns = await NetworkNamespace.CreateAsync("so-t", Timeout);
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < 2000; i++)
        {
            ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp).Dispose();
        }

        var synchronous = stopwatch.Elapsed;
        stopwatch.Restart();
        var sockets = await Task.WhenAll(Enumerable.Range(0, 5000)
            .Select(_ => ns.CreateSocketAsync(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp)));
        var asynchronous = stopwatch.Elapsed;
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        Assert.True(synchronous < TimeSpan.FromSeconds(2), $"2000 sockets one by one took {synchronous.TotalMilliseconds:0} ms");
        Assert.True(asynchronous < TimeSpan.FromSeconds(2), $"5000 sockets at once took {asynchronous.TotalMilliseconds:0} ms");
        Assert.All(sockets, s => Assert.Equal(AddressFamily.InterNetworkV6, s.AddressFamily));
    }

    [Fact(Timeout = 60_000)]
    public async Task Commands_run_inside_the_namespace_and_failures_carry_exit_code_and_stderr()
    {
        await using var ns = await NetworkNamespace.CreateAsync("so-t", Timeout);

        var identify = await ns.RunAsync("ip", ["netns", "identify"], Timeout);
        Assert.Equal(ns.Name, identify.StandardOutput.Trim());

        var e = await Assert.ThrowsAsync<CommandException>(() => ns.RunAsync("sh", ["-c", "echo broken >&2; exit 3"], Timeout));
        Assert.Equal(3, e.ExitCode);
        Assert.Equal("broken", e.StandardError);

        var tried = await ns.TryRunAsync("sh", ["-c", "exit 4"], Timeout);
        Assert.Equal(4, tried.ExitCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_started_process_runs_in_the_namespace_its_output_is_captured_and_signals_reach_it()
    {
        await using var ns = await NetworkNamespace.CreateAsync("so-t", Timeout);
        var script = "echo starting; echo \"env=$LAB_VALUE\"; echo oops >&2; trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.05; done";
        await using var process = ns.StartProcess("sh", ["-c", script], new Dictionary<string, string> { ["LAB_VALUE"] = "42" });

        Assert.Equal("env=42", await process.WaitForOutputAsync("env=", TimeSpan.FromSeconds(10), Timeout));
        await process.WaitForOutputAsync("oops", TimeSpan.FromSeconds(10), Timeout);
        var identify = await Netns.RunAsync("ip", "netns", "identify", process.Pid.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(ns.Name, identify.Trim());

        await Assert.ThrowsAsync<TimeoutException>(() => process.WaitForOutputAsync("never printed", TimeSpan.FromMilliseconds(100), Timeout));

        process.SendSignal(Signals.Terminate);
        Assert.Equal(7, await process.Exited.WaitAsync(Timeout));
        Assert.Contains("got TERM", process.Output, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => process.SendSignal(Signals.Terminate));
        var late = await Assert.ThrowsAsync<InvalidOperationException>(() => process.WaitForOutputAsync("never printed", TimeSpan.FromSeconds(5), Timeout));
        Assert.Contains("exited with code 7", late.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Disposing_kills_every_process_in_the_namespace_and_deletes_it()
    {
        var ns = await NetworkNamespace.CreateAsync("so-t", Timeout);
        var started = ns.StartProcess("sleep", ["600"]);

        // A daemonised process the lab did not start itself.
        await ns.RunAsync("sh", ["-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 &"], Timeout);
        var pids = (await Netns.RunAsync("ip", "netns", "pids", ns.Name))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
        Assert.Contains(started.Pid, pids);
        Assert.Equal(2, pids.Length);
        Assert.Contains(ns.Name, await Netns.ListAsync());

        await ns.DisposeAsync();

        Assert.DoesNotContain(ns.Name, await Netns.ListAsync());
        Assert.All(pids, pid => Assert.False(Netns.IsRunning(pid), $"pid {pid} still runs"));
        Assert.True(started.HasExited);
        Assert.Throws<ObjectDisposedException>(() => ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        await ns.DisposeAsync(); // twice is fine
    }

    [Theory]
    [InlineData("")]
    [InlineData("Upper")]
    [InlineData("much-too-long")]
    [InlineData("-dash")]
    [InlineData("a/b")]
    public async Task A_bad_prefix_is_refused_before_anything_is_created(string prefix)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => NetworkNamespace.CreateAsync(prefix, CancellationToken.None));
        Assert.Contains("[a-z0-9-]", e.Message, StringComparison.Ordinal);
    }
}
