using System.Net.Sockets;
using System.Text;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Agent;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TunnelAgentTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("so-agent-").FullName;
    private readonly StringWriter _log = new();

    private string SocketPath => Path.Combine(_directory, "tunnel-gre0.sock");

    public void Dispose()
    {
        Directory.Delete(_directory, recursive: true);
        _log.Dispose();
    }

    [Fact(Timeout = 20_000)]
    public async Task Status_over_the_socket_reports_each_tunnel_with_its_counters()
    {
        var tunnel = new FakeDataplane("gre0");
        await using var agent = await TunnelAgent.StartAsync([tunnel], SocketPath, _log, CancellationToken.None);
        Assert.True(tunnel.Started);

        var status = await TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None);
        Assert.Equal(Environment.ProcessId, status.Pid);
        var reported = Assert.Single(status.Tunnels);
        Assert.Equal(("gre0", GreDataplaneKind.Userspace, "192.0.2.1", "198.51.100.2", 42u, 1472, 0x10u, "running"),
            (reported.Name, reported.Dataplane, reported.Local, reported.Remote, reported.Key!.Value, reported.Mtu, reported.FirewallMark!.Value, reported.State));
        Assert.Equal(tunnel.Counters, reported.Counters);
    }

    [Fact(Timeout = 20_000)]
    public async Task The_socket_is_readable_and_writable_by_its_owner_only_and_removed_on_dispose()
    {
        var tunnel = new FakeDataplane("gre0");
        var agent = await TunnelAgent.StartAsync([tunnel], SocketPath, _log, CancellationToken.None);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
        Assert.Single(Directory.GetFileSystemEntries(_directory)); // No temporary name left over.

        await agent.DisposeAsync();
        Assert.False(File.Exists(SocketPath));
        Assert.True(tunnel.Disposed);
        Assert.Contains("tunnel gre0 removed", _log.ToString(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 20_000)]
    public async Task A_stop_request_is_acknowledged_and_completes_Stopped_naming_who_asked()
    {
        await using var agent = await TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None);
        await TunnelAgentClient.StopAsync(SocketPath, CancellationToken.None);
        var reason = await agent.Stopped.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Contains($"stop requested by pid {Environment.ProcessId} uid ", reason, StringComparison.Ordinal);
    }

    [Fact(Timeout = 20_000)]
    public async Task A_bare_word_works_as_a_request_and_an_unknown_one_gets_an_error_that_says_what_to_send()
    {
        await using var agent = await TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None);
        var status = await TunnelAgentClient.SendRawAsync(SocketPath, "status", CancellationToken.None);
        Assert.StartsWith("{\"ok\":true,\"status\":{", status, StringComparison.Ordinal);

        var unknown = await TunnelAgentClient.SendRawAsync(SocketPath, "{\"command\":\"flush\"}", CancellationToken.None);
        Assert.Contains("\"ok\":false", unknown, StringComparison.Ordinal);
        Assert.Contains("send {\\u0022command\\u0022:\\u0022status\\u0022}", unknown, StringComparison.Ordinal);
        Assert.False(agent.Stopped.IsCompleted);
    }

    [Fact(Timeout = 20_000)]
    public async Task A_request_line_longer_than_the_limit_ends_that_connection_and_the_agent_carries_on()
    {
        await using var agent = await TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None);
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath));
            await socket.SendAsync(Encoding.ASCII.GetBytes(new string('x', 10_000) + "\n"));
            var buffer = new byte[100];
            try
            {
                Assert.Equal(0, await socket.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(5)));
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // Closed with the rest of the line unread: the kernel resets instead of ending the stream.
            }
        }

        Assert.NotNull(await TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None));
    }

    [Fact(Timeout = 20_000)]
    public async Task A_second_agent_on_the_same_socket_is_refused_but_a_stale_socket_file_is_replaced()
    {
        await using (var first = await TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None))
        {
            var error = await Assert.ThrowsAsync<TunnelException>(() =>
                TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None));
            Assert.Contains("Another tunnel agent is listening", error.Message, StringComparison.Ordinal);
            Assert.NotNull(await TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None));
        }

        // A crashed agent leaves its socket file behind, with nobody listening. (.NET's Socket would delete the file
        // when disposed, as a clean exit does; a crash does not.)
        BindAndAbandon(SocketPath);

        Assert.True(File.Exists(SocketPath));
        await using var agent = await TunnelAgent.StartAsync([new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None);
        Assert.NotNull(await TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None));
    }

    [Fact(Timeout = 20_000)]
    public async Task When_a_tunnel_fails_to_start_the_ones_started_are_removed_and_so_is_the_socket()
    {
        var first = new FakeDataplane("gre0");
        var second = new FakeDataplane("gre1", new TunnelException("no such address"));
        var error = await Assert.ThrowsAsync<TunnelException>(() => TunnelAgent.StartAsync([first, second], SocketPath, _log, CancellationToken.None));
        Assert.Equal("no such address", error.Message);
        Assert.True(first.Disposed);
        Assert.False(File.Exists(SocketPath));
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Fact(Timeout = 20_000)]
    public async Task A_tunnel_that_fails_while_running_faults_Stopped_and_shows_in_the_status()
    {
        var tunnel = new FakeDataplane("gre0");
        await using var agent = await TunnelAgent.StartAsync([tunnel], SocketPath, _log, CancellationToken.None);
        tunnel.Fail(new TunnelException("Reading from the TUN device gre0 failed"));
        var error = await Assert.ThrowsAsync<TunnelException>(() => agent.Stopped.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Contains("Tunnel gre0 failed", error.Message, StringComparison.Ordinal);
        var status = await TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None);
        Assert.StartsWith("failed: Reading from the TUN device", status.Tunnels[0].State, StringComparison.Ordinal);
    }

    [Fact(Timeout = 20_000)]
    public async Task Asking_an_agent_that_is_not_there_says_how_to_start_one()
    {
        var error = await Assert.ThrowsAsync<TunnelException>(() => TunnelAgentClient.GetStatusAsync(SocketPath, CancellationToken.None));
        Assert.Contains("No tunnel agent is running at", error.Message, StringComparison.Ordinal);
        Assert.Contains("switchover tunnel run", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task Two_tunnels_with_one_name_or_none_at_all_are_refused_before_anything_is_created()
    {
        await Assert.ThrowsAsync<ArgumentException>(() => TunnelAgent.StartAsync([], SocketPath, _log, CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() =>
            TunnelAgent.StartAsync([new FakeDataplane("gre0"), new FakeDataplane("gre0")], SocketPath, _log, CancellationToken.None));
        Assert.False(File.Exists(SocketPath));
    }

    private static unsafe void BindAndAbandon(string path)
    {
        var fd = Switchover.Migration.Interop.Libc.Socket(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
        Assert.True(fd >= 0);
        var address = new byte[110];
        address[0] = 1;
        Encoding.UTF8.GetBytes(path, address.AsSpan(2));
        fixed (byte* a = address)
        {
            Assert.Equal(0, Switchover.Migration.Interop.Libc.Bind(fd, a, (uint)address.Length));
        }

        Switchover.Migration.Interop.Libc.Close(fd);
    }

    [Fact]
    public void The_default_socket_is_named_after_the_tunnel_under_run_switchover()
    {
        Assert.Equal("/run/switchover/tunnel-gre0.sock", TunnelAgent.DefaultSocketPath("gre0"));
    }
}
