using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// What real generations tell systemd through NOTIFY_SOCKET across deploys, without systemd: the test binds the
/// socket and reads the datagrams. (The tests with a real systemd, named "Systemd", run in the VM lab.)
/// </summary>
public sealed class NotifySocketHandoffTests(ITestOutputHelper output) : TestBase(output)
{
    [Fact(Timeout = 240_000)]
    public async Task Generations_tell_the_notify_socket_who_the_main_pid_is_frame_reloads_ignore_SIGHUP_restore_a_failed_reload_and_the_last_says_stopping()
    {
        using var systemd = new Receiver();
        var app = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort));
        var environment = new Dictionary<string, string> { ["NOTIFY_SOCKET"] = systemd.Path };

        var v1 = await app.DeployAsync("v1", TakeoverTimeout, Token, environment: environment);
        var first = await systemd.WaitForAsync(m => m.Contains("READY=1", StringComparison.Ordinal), Token);
        Assert.Equal($"MAINPID={v1.Process.Pid}\nREADY=1\nSTATUS=generation 1 active, 0 draining", first);

        var v2 = await app.DeployAsync("v2", TakeoverTimeout, Token, environment: environment);
        await systemd.WaitForAsync(m => m.StartsWith($"MAINPID={v2.Process.Pid}\nREADY=1", StringComparison.Ordinal), Token);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(30)));

        // Type=notify-reload sends SIGHUP to the main process on reload; it must not end the generation that serves.
        v2.Process.SendSignal(Signals.Hangup);
        await v2.Process.WaitForOutputAsync("SIGHUP ignored", TimeSpan.FromSeconds(10), Token);
        Assert.StartsWith("v2 ", (await GetAsync(Lab.Client, new System.Net.IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body, StringComparison.Ordinal);

        var v3 = app.Launch("v3", ["--FailHealth=true", "--Switchover:ReadinessTimeout=00:00:03"], environment: environment);
        Assert.Equal(1, await ExitsWithinAsync(v3, TimeSpan.FromSeconds(60)));
        var restored = await systemd.WaitForAsync(m => m.Contains("reload failed", StringComparison.Ordinal), Token);
        Assert.StartsWith($"READY=1\nMAINPID={v2.Process.Pid}\nSTATUS=reload failed: Not ready after 3 s (Switchover:ReadinessTimeout)", restored, StringComparison.Ordinal);
        Assert.StartsWith("v2 ", (await GetAsync(Lab.Client, new System.Net.IPEndPoint(Lab.ServerV4, PublicPort), "/", Token)).Body, StringComparison.Ordinal);

        v2.Process.SendSignal(Signals.Terminate);
        Assert.Equal(0, await ExitsWithinAsync(v2.Process, TimeSpan.FromSeconds(30)));
        var stopping = await systemd.WaitForAsync(m => m.Contains("STOPPING=1", StringComparison.Ordinal), Token);

        var all = systemd.Messages;
        Output.WriteLine(string.Join("\n---\n", all));
        Assert.Equal("STOPPING=1\nSTATUS=stopped: no generation left", stopping);
        Assert.Single(all, m => m.Contains("STOPPING=1", StringComparison.Ordinal));
        Assert.Equal(2, all.Count(m => m.StartsWith("RELOADING=1\nMONOTONIC_USEC=", StringComparison.Ordinal)));
        var reload = all.ToList().FindIndex(m => m.StartsWith("RELOADING=1", StringComparison.Ordinal));
        var takeover = all.ToList().FindIndex(m => m.StartsWith($"MAINPID={v2.Process.Pid}\nREADY=1", StringComparison.Ordinal));
        Assert.True(reload < takeover, "RELOADING=1 must come before the new generation's READY=1");
        Assert.DoesNotContain(all, m => m.Contains($"MAINPID={v3.Pid.ToString(CultureInfo.InvariantCulture)}", StringComparison.Ordinal));
        Assert.Equal(2, all.Count(m => m.Contains("READY=1", StringComparison.Ordinal) && !m.Contains("reload failed", StringComparison.Ordinal)));
    }

    /// <summary>An AF_UNIX datagram socket in a temporary directory that collects what is sent to it.</summary>
    private sealed class Receiver : IDisposable
    {
        private readonly string _directory = Directory.CreateTempSubdirectory("switchover-notify-").FullName;
        private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        private readonly List<string> _messages = [];
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        public Receiver()
        {
            Path = System.IO.Path.Combine(_directory, "notify");
            _socket.Bind(new UnixDomainSocketEndPoint(Path));
            _loop = Task.Run(ReceiveAsync);
        }

        public string Path { get; }

        public IReadOnlyList<string> Messages
        {
            get
            {
                lock (_messages)
                {
                    return [.. _messages];
                }
            }
        }

        public async Task<string> WaitForAsync(Func<string, bool> match, CancellationToken cancellationToken)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                if (Messages.FirstOrDefault(match) is { } message)
                {
                    return message;
                }

                Assert.True(DateTime.UtcNow < deadline, "No such notification within 30 s. Received:\n" + string.Join("\n---\n", Messages));
                await Task.Delay(50, cancellationToken);
            }
        }

        private async Task ReceiveAsync()
        {
            var buffer = new byte[65536];
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    var length = await _socket.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    lock (_messages)
                    {
                        _messages.Add(Encoding.UTF8.GetString(buffer, 0, length));
                    }
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _loop.Wait(TimeSpan.FromSeconds(5));
            _socket.Dispose();
            _stop.Dispose();
            Directory.Delete(_directory, recursive: true);
        }
    }
}
