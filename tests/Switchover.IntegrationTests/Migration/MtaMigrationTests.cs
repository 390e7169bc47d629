using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using MimeKit;
using Switchover.Lab;

namespace Switchover.IntegrationTests.Migration;

/// <summary>
/// The seed's own use case: a real Postfix serving tcp/192.0.2.1:25 moves to the new host while the peer keeps
/// sending mail. The Postfix configuration is samples/Mta's, file for file; the test only points each instance's
/// directories into a temporary directory and gives the lab what DNS would (see <see cref="MailServerLabSettings"/>).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed partial class MtaMigrationTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private const uint Key = MigrationLab.Key;
    private const string Tunnel = MigrationLab.Tunnel;
    private const string Tuple = "tcp/192.0.2.1:25";
    private const int BeforeMove = 10;
    private const int AfterMove = 10;
    private const int MaxMessages = 80;
    private static readonly TimeSpan SendingTime = TimeSpan.FromSeconds(90);

    // What the lab lacks and DNS would give, on top of the sample's main.cf: no reverse lookups of clients (nothing
    // answers them in a namespace), and, for the mail server on either host, sink.example's "MX": the sink on the peer.
    private static readonly Dictionary<string, string> LabSettings = new() { ["smtpd_peername_lookup"] = "no" };
    private static readonly Dictionary<string, string> MailServerLabSettings = new(LabSettings)
    {
        ["transport_maps"] = "inline:{ sink.example=smtp:[198.51.100.10]:25 }",
    };

    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(4));
    private readonly string _name = "mta" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 4));
    private readonly string _run = Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 6));
    private FourHostLab _lab = null!;

    private CancellationToken Token => _timeout.Token;

    private static string Sample(params string[] path) => Path.Combine([Artifacts.RepositoryRoot, "samples", "Mta", .. path]);

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        foreach (var tool in new[] { "postfix", "postconf", "postqueue", "swaks" })
        {
            Assert.True(File.Exists($"/usr/sbin/{tool}") || File.Exists($"/usr/bin/{tool}"),
                $"{tool} is missing: apt-get install -y postfix swaks (.ci/prerequisites does; it keeps the system Postfix from starting).");
        }

        _lab = await FourHostLab.CreateAsync(Token);
    }

    public async Task DisposeAsync()
    {
        await MigrationLab.DisposeAsync(_lab);
    }

    public void Dispose() => _timeout.Dispose();

    [Fact(Timeout = 180_000)]
    public async Task A_postfix_moved_while_mail_arrives_sees_real_clients_sends_from_the_old_ip_and_delivers_every_message_exactly_once()
    {
        var oldBefore = await HostSnapshot.TakeAsync(_lab.Old, Token);
        var newBefore = await HostSnapshot.TakeAsync(_lab.New, Token);
        var instances = new List<PostfixInstance>();
        try
        {
            var sink = await StartPostfixAsync(_lab.Peer, "sink", Sample("lab", "sink.main.cf"), LabSettings);
            var old = await StartPostfixAsync(_lab.Old, "old", Sample("old-host", "main.cf"), MailServerLabSettings);
            PostfixInstance @new;
            await using (var agents = await StartAgentsAsync())
            {
                await MigrateAsync(_lab.Old, "setup", "--side", "old", "--tunnel", Tunnel, "--local", "192.0.2.1", "--remote", "203.0.113.1", "--key", $"{Key}");
                await MigrateAsync(_lab.New, "setup", "--side", "new", "--tunnel", Tunnel, "--local", "203.0.113.1", "--remote", "192.0.2.1", "--key", $"{Key}",
                    "--tuple", Tuple);
                // After setup: Postfix refuses to start while 192.0.2.1 (inet_interfaces) is not an address of the host.
                @new = await StartPostfixAsync(_lab.New, "new", Sample("new-host", "main.cf"), MailServerLabSettings);

                // 1. Numbered messages from the peer to 192.0.2.1:25, one SMTP session each, before, during and after the move.
                var clock = Stopwatch.StartNew();
                var sender = new NumberedMail(this, clock);
                var sending = sender.RunAsync();
                await sender.WaitForAsync(BeforeMove, sending);
                using var open = await LineClient.ConnectAsync(_lab.Peer, new IPEndPoint(_lab.OldV4, 25), Token);
                Assert.Equal("220 old.mx.example ESMTP old host", await open.ReadLineAsync(Token));
                Assert.Equal("250 old.mx.example", await open.AskAsync("HELO peer.example", Token));
                var moveStarted = clock.Elapsed;
                await MigrateAsync(_lab.Old, "move", Tuple);
                sender.Moved(moveStarted, clock.Elapsed);
                await sending.WaitAsync(SendingTime + TimeSpan.FromSeconds(30), Token);
                output.WriteLine(sender.Describe());

                // A session open across the move finishes on the old host: only new flows move.
                Assert.StartsWith("250 ", await open.AskAsync("MAIL FROM:<sender@peer.example>", Token), StringComparison.Ordinal);
                Assert.StartsWith("250 ", await open.AskAsync("RCPT TO:<box@mx.example>", Token), StringComparison.Ordinal);
                Assert.StartsWith("354 ", await open.AskAsync("DATA", Token), StringComparison.Ordinal);
                await open.SendAsync($"Message-Id: <open.{_run}@peer.example>\r\nSubject: open across the move\r\n\r\nstill the old host", Token);
                Assert.StartsWith("250 2.0.0 Ok: queued as", await open.AskAsync(".", Token), StringComparison.Ordinal);
                Assert.StartsWith("221 ", await open.AskAsync("QUIT", Token), StringComparison.Ordinal);

                // 2. Relaying through the moved server: allowed because smtpd sees the peer's real address (mynetworks),
                // and sent on from the old IP (smtp_bind_address), through the tunnel and out of the old host.
                var relay = await SwaksAsync($"<relay.{_run}@peer.example>", "someone@sink.example", "relayed through the moved server");
                Assert.True(relay.Accepted, "The moved server refused to relay for the peer:\n" + relay.Transcript);
                Assert.Equal("new.mx.example", relay.Banner);

                // Everything accepted is delivered: every queue empties (bounded).
                await WaitForEmptyQueuesAsync([old, @new, sink], TimeSpan.FromSeconds(60));
                var status = await MigrateAsync(_lab.Old, "status", "--tunnel-socket", TunnelSocket(_lab.Old));
                output.WriteLine(status);
                Assert.Matches(@"tcp/192\.0\.2\.1:25 +[1-9]\d* +[1-9]\d*", status);

                Assert.All(sender.Sent, m => Assert.True(m.Accepted, $"Message {m.Number} was not accepted:\n{m.Transcript}"));
                Assert.True(sender.Sent.Count(m => m.Start > sender.MoveEnded) >= AfterMove, "Too few messages were sent after the move:\n" + sender.Describe());

                // 3. Every numbered message exactly once across the two hosts' mailboxes, on the host whose banner accepted it.
                var delivered = Delivered(old, "old").Concat(Delivered(@new, "new")).ToList();
                foreach (var m in sender.Sent)
                {
                    var copies = delivered.Where(d => d.Number == m.Number).ToList();
                    Assert.True(copies.Count == 1, $"Message {m.Number} was delivered {copies.Count} times ({string.Join(", ", copies.Select(c => c.Host))}).");
                    Assert.Equal(m.Banner, copies[0].Host + ".mx.example");
                }

                Assert.Equal(sender.Sent.Count, delivered.Count);
                Assert.Single(old.Mailbox(), m => m.MessageId == $"open.{_run}@peer.example");
                Assert.DoesNotContain(@new.Mailbox(), m => m.MessageId == $"open.{_run}@peer.example");
                // Sessions over before the move began stayed on the old host; those begun after it ended reached the new one.
                Assert.All(sender.Sent.Where(m => m.End < sender.MoveStarted), m => Assert.Equal("old.mx.example", m.Banner));
                Assert.All(sender.Sent.Where(m => m.Start > sender.MoveEnded), m => Assert.Equal("new.mx.example", m.Banner));

                // 4. Mail received on the new host carries the peer's real address in its Received: header.
                var onNew = @new.Mailbox().Where(m => m.MessageId?.EndsWith($".{_run}@peer.example", StringComparison.Ordinal) == true).ToList();
                Assert.True(onNew.Count >= AfterMove, $"Only {onNew.Count} messages reached the new host.");
                Assert.All(onNew, m => Assert.Matches(@"^from peer\.example \(unknown \[198\.51\.100\.10\]\)\s+by new\.mx\.example ", Received(m)[0]));

                // 5. Mail sent from the new host left from the old IP: the sink saw 192.0.2.1 and the new host's name.
                var relayed = Assert.Single(sink.Mailbox(), m => m.MessageId == $"relay.{_run}@peer.example");
                var hops = Received(relayed);
                output.WriteLine(string.Join('\n', hops));
                Assert.Matches(@"^from new\.mx\.example \(unknown \[192\.0\.2\.1\]\)\s+by sink\.example ", hops[0]);
                Assert.Matches(@"^from peer\.example \(unknown \[198\.51\.100\.10\]\)\s+by new\.mx\.example ", hops[1]);

                // The new host's Postfix stops before teardown takes 192.0.2.1 off its lo.
                Assert.Empty(await @new.StopAsync(TimeSpan.FromSeconds(10)));
                await MigrateAsync(_lab.Old, "teardown");
                await MigrateAsync(_lab.New, "teardown");
            }

            // 6. Every Postfix stopped by itself, and both hosts exactly as before.
            foreach (var instance in instances)
            {
                Assert.Empty(await instance.StopAsync(TimeSpan.FromSeconds(10)));
                Assert.Empty(instance.Processes());
            }

            Assert.Equal(oldBefore, await HostSnapshot.TakeAsync(_lab.Old, Token));
            Assert.Equal(newBefore, await HostSnapshot.TakeAsync(_lab.New, Token));
            Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.Old), ".migrations")));
            Assert.False(Directory.Exists(Path.Combine(StateDirectory(_lab.New), ".migrations")));
        }
        catch
        {
            foreach (var instance in instances)
            {
                output.WriteLine($"--- {instance} maillog:\n{instance.Log}");
            }

            throw;
        }
        finally
        {
            foreach (var instance in instances)
            {
                await instance.DisposeAsync();
            }
        }

        Assert.All(instances, i => Assert.False(Directory.Exists(i.Root), $"{i.Root} is still there."));

        async Task<PostfixInstance> StartPostfixAsync(NetworkNamespace host, string name, string mainCf, IReadOnlyDictionary<string, string> settings)
        {
            var instance = await PostfixInstance.StartAsync(host, name, mainCf, Sample("master.cf"), settings, Token);
            instances.Add(instance);
            return instance;
        }
    }

    /// <summary>The numbered messages of this run in an instance's Maildir, with the host they are on.</summary>
    private IEnumerable<(int Number, string Host)> Delivered(PostfixInstance instance, string host) =>
        instance.Mailbox().Select(m => MessageNumber().Match(m.MessageId ?? ""))
            .Where(m => m.Success && m.Groups["run"].Value == _run)
            .Select(m => (int.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture), host));

    /// <summary>A message's Received: headers, newest (topmost) first, unfolded.</summary>
    private static List<string> Received(MimeMessage message) =>
        [.. message.Headers.Where(h => h.Id == HeaderId.Received).Select(h => Regex.Replace(h.Value.Trim(), @"\s+", " "))];

    private async Task WaitForEmptyQueuesAsync(PostfixInstance[] instances, TimeSpan limit)
    {
        var deadline = Stopwatch.StartNew();
        foreach (var instance in instances)
        {
            string queue;
            while ((queue = await instance.QueueAsync(Token)).Length > 0)
            {
                Assert.True(deadline.Elapsed < limit, $"The queue of {instance} did not empty within {limit.TotalSeconds} s:\n{queue}\nmaillog:\n{instance.Log}");
                await Task.Delay(200, Token);
            }
        }
    }

    private async Task<SmtpSession> SwaksAsync(string messageId, string recipient, string body)
    {
        var result = await _lab.Peer.TryRunAsync("swaks", ["--server", "192.0.2.1:25", "--helo", "peer.example", "--from", "sender@peer.example",
            "--to", recipient, "--header", $"Message-Id: {messageId}", "--header", $"Subject: {body}", "--body", body, "--timeout", "20s"],
            Token, TimeSpan.FromSeconds(40));
        var transcript = result.StandardOutput + result.StandardError;
        var banner = Banner().Match(transcript);
        return new SmtpSession(result.ExitCode == 0 && QueuedAs().IsMatch(transcript), banner.Success ? banner.Groups["host"].Value : "(no banner)", transcript);
    }

    private async Task<string> MigrateAsync(NetworkNamespace host, string verb, params string[] arguments)
    {
        var result = await host.TryRunAsync("dotnet", [Artifacts.Cli, "migrate", verb, "--name", _name, .. arguments, "--state-dir", StateDirectory(host)],
            Token, TimeSpan.FromSeconds(120));
        Assert.True(result.ExitCode == 0, $"switchover migrate {verb} {string.Join(' ', arguments)} on {host} failed ({result.ExitCode}): {result.StandardError}");
        return result.StandardOutput;
    }

    private static string StateDirectory(NetworkNamespace host) => MigrationLab.StateDirectory(host);

    /// <summary>The userspace tunnel as the sample's README runs it.</summary>
    private Task<MigrationLab.Agents> StartAgentsAsync() => MigrationLab.StartAgentsAsync(_lab, Token);

    private static string TunnelSocket(NetworkNamespace host) => MigrationLab.TunnelSocket(host);

    [GeneratedRegex(@"^<-  220 (?<host>\S+) ESMTP", RegexOptions.Multiline)]
    private static partial Regex Banner();

    [GeneratedRegex(@"^<-  250 .*queued as", RegexOptions.Multiline)]
    private static partial Regex QueuedAs();

    [GeneratedRegex(@"^mta-(?<n>\d+)\.(?<run>[0-9a-f]+)@peer\.example$")]
    private static partial Regex MessageNumber();

    private sealed record SmtpSession(bool Accepted, string Banner, string Transcript);

    private sealed record SentMessage(int Number, TimeSpan Start, TimeSpan End, bool Accepted, string Banner, string Transcript);

    /// <summary>
    /// Sends numbered messages one SMTP session after another, bounded in count and time, until
    /// <see cref="AfterMove"/> of them began after the move ended.
    /// </summary>
    private sealed class NumberedMail(MtaMigrationTests test, Stopwatch clock)
    {
        private readonly List<SentMessage> _sent = [];
        private long _moveStarted = long.MaxValue;
        private long _moveEnded = long.MaxValue;

        public IReadOnlyList<SentMessage> Sent
        {
            get
            {
                lock (_sent)
                {
                    return [.. _sent];
                }
            }
        }

        public TimeSpan MoveStarted => TimeSpan.FromTicks(Interlocked.Read(ref _moveStarted));

        public TimeSpan MoveEnded => TimeSpan.FromTicks(Interlocked.Read(ref _moveEnded));

        public void Moved(TimeSpan started, TimeSpan ended)
        {
            Interlocked.Exchange(ref _moveStarted, started.Ticks);
            Interlocked.Exchange(ref _moveEnded, ended.Ticks);
        }

        public async Task RunAsync()
        {
            for (var n = 1; n <= MaxMessages && clock.Elapsed < SendingTime; n++)
            {
                if (Sent.Count(m => m.Start > MoveEnded) >= AfterMove)
                {
                    return;
                }

                var start = clock.Elapsed;
                var session = await test.SwaksAsync($"<mta-{n}.{test._run}@peer.example>", "box@mx.example", $"message {n} of run {test._run}");
                lock (_sent)
                {
                    _sent.Add(new SentMessage(n, start, clock.Elapsed, session.Accepted, session.Banner, session.Transcript));
                }
            }
        }

        public async Task WaitForAsync(int count, Task sending)
        {
            while (Sent.Count < count)
            {
                Assert.False(sending.IsCompleted, "The sender stopped early:\n" + Describe());
                await Task.Delay(100, test.Token);
            }
        }

        public string Describe() =>
            $"move {MoveStarted.TotalSeconds:0.000}-{MoveEnded.TotalSeconds:0.000} s\n"
            + string.Join('\n', Sent.Select(m => $"{m.Number,3} {m.Start.TotalSeconds,7:0.000}-{m.End.TotalSeconds,7:0.000} s {(m.Accepted ? "accepted" : "NOT accepted")} by {m.Banner}"));
    }
}
