using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// Issue 9, finding 3: a deploy must not close an idle keep-alive connection under a client that reuses it without
/// checking it first. Clients idle 0 to 3 s between requests (far below Kestrel's keep-alive timeout, so without a
/// deploy the server never closes their connections) across ten handoffs.
/// <para>
/// SWITCHOVER_TEST_IDLE_CONNECTIONS=CloseAfterQuiet runs the ten-handoff tests against the old policy (the drain of
/// before issue 9), which is how they were seen to fail: see docs/drain.md.
/// </para>
/// </summary>
public sealed class IdleKeepAliveDrainTests(ITestOutputHelper output) : TestBase(output)
{
    private const int Handoffs = 10;
    private const int Clients = 3;
    private const int Seed = 9;
    private static readonly TimeSpan MaxIdle = TimeSpan.FromSeconds(3);

    /// <summary>The drain policy the generations run with: the default, unless the environment asks for another (to show the tests fail).</summary>
    private static string[] PolicyArguments() =>
        Environment.GetEnvironmentVariable("SWITCHOVER_TEST_IDLE_CONNECTIONS") is { Length: > 0 } policy
            ? [$"--Switchover:Drain:IdleConnections={policy}"]
            : [];

    [Fact(Timeout = 180_000)]
    public async Task Python_http_client_idling_up_to_3_s_between_requests_loses_nothing_across_ten_handoffs()
    {
        var python = await Lab.Client.TryRunAsync("python3", ["--version"], Token);
        Assert.True(python.ExitCode == 0, "python3 is missing: apt-get install -y python3 (.ci/prerequisites does).");
        var generations = new List<LaunchedGeneration> { await Service.DeployAsync("v1", TakeoverTimeout, Token, PolicyArguments()) };
        var directory = Directory.CreateTempSubdirectory("switchover-idle-");
        try
        {
            var script = Path.Combine(directory.FullName, "clients.py");
            var stop = Path.Combine(directory.FullName, "stop");
            await File.WriteAllTextAsync(script, ClientScript, Token);
            string[] hosts = [Lab.ServerV4.ToString(), Lab.ServerV6.ToString(), Lab.ServerV4.ToString()];
            await using var clients = Lab.Client.StartProcess("python3",
                [script, string.Join(',', hosts), PublicPort.ToString(CultureInfo.InvariantCulture), MaxIdle.TotalSeconds.ToString(CultureInfo.InvariantCulture),
                 Seed.ToString(CultureInfo.InvariantCulture), "150", stop]);
            await clients.WaitForOutputAsync("started", TimeSpan.FromSeconds(20), Token);

            await DeployAllAsync(generations);
            await File.WriteAllTextAsync(stop, string.Empty, Token);
            Assert.Equal(0, await ExitsWithinAsync(clients, TimeSpan.FromSeconds(20)));

            var report = JsonSerializer.Deserialize<ClientReport>(clients.OutputLines.Last(l => l.StartsWith('{')), JsonOptions)!;
            Output.WriteLine($"http.client: {report.Ok} OK, {report.Failed} failed, {report.Connections} connections; bodies by version: " +
                             string.Join(", ", report.Versions.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} x{p.Value}")));
            foreach (var failure in report.Failures.Take(20))
            {
                Output.WriteLine("  " + failure);
            }

            Assert.True(report.Failed == 0, $"{report.Failed} requests failed: {string.Join(" | ", report.Failures.Take(5))}");
            Assert.True(report.Ok >= Handoffs * Clients, $"Only {report.Ok} requests were answered.");
            AssertClientsMovedAcross(generations, report.Versions.Keys);
            await AssertSupersededExitedAsync(generations);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task Our_driver_reusing_connections_without_a_probe_loses_nothing_across_ten_handoffs()
    {
        var generations = new List<LaunchedGeneration> { await Service.DeployAsync("v1", TakeoverTimeout, Token, PolicyArguments()) };
        var options = Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(2), concurrency: 1);
        options.ProbeBeforeReuse = false;
        options.MaxIdleBetweenRequests = MaxIdle;
        options.Seed = Seed;
        IReadOnlyList<LoadTarget> targets = [.. AllPaths().Take(Clients)];
        await using var load = HttpLoad.Start(targets, options, Token);

        await DeployAllAsync(generations);
        var result = await load.StopAsync(Token);

        AssertNoFailures(result);
        Assert.True(result.TotalRequests >= Handoffs * Clients, result.Summary);
        AssertClientsMovedAcross(generations, result.Bodies.Keys.Select(TextOf));
        await AssertSupersededExitedAsync(generations);
    }

    [Fact(Timeout = 120_000)]
    public async Task An_idle_connection_on_the_superseded_generation_is_answered_with_connection_close_when_its_client_comes_back()
    {
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token);
        var to = new IPEndPoint(Lab.ServerV4, PublicPort);
        using var idle = await ConnectAsync(to);
        var (first, _) = await RequestAsync(idle, "/");
        Assert.Equal("v1", TextOf(first));

        // A request in progress when the drain begins is told apart from an idle connection (the request's connection
        // is found through Kestrel's features); the client gives up on it below.
        using var slow = await ConnectAsync(to);
        await slow.SendAsync(Encoding.ASCII.GetBytes("GET /?delay=30000 HTTP/1.1\r\nHost: lab\r\n\r\n"), SocketFlags.None, Token);
        await Task.Delay(TimeSpan.FromMilliseconds(300), Token);

        await Service.DeployAsync("v2", TakeoverTimeout, Token);
        var waiting = await v1.Process.WaitForOutputAsync("waits for its clients", TimeSpan.FromSeconds(20), Token);
        Assert.Contains("1 connection(s) with a request in progress, 1 idle", waiting, StringComparison.Ordinal);
        slow.Close();

        // Longer than the quiet period and a poll: the old drain had closed the idle connection by now.
        await Task.Delay(TimeSpan.FromSeconds(3), Token);
        Assert.False(v1.Process.HasExited, "v1 exited while a client's idle connection was within the keep-alive timeout.");
        var (body, headers) = await RequestAsync(idle, "/");
        Assert.Equal("v1", TextOf(body));
        Assert.Contains("Connection: close", headers, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, await idle.ReceiveAsync(new byte[16], SocketFlags.None, Token));

        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(20)));
        Assert.Matches(@"drained in \d+ ms \(quiet\); 0 connection\(s\) still open", v1.Process.Output);
        var (_, next) = await GetAsync(Lab.Client, to, "/", Token);
        Assert.Equal("v2", TextOf(next));
    }

    [Fact(Timeout = 120_000)]
    public async Task Under_CloseAfterQuiet_the_superseded_generation_closes_an_idle_connection_before_its_client_comes_back()
    {
        string[] old = ["--Switchover:Drain:IdleConnections=CloseAfterQuiet"];
        var v1 = await Service.DeployAsync("v1", TakeoverTimeout, Token, old);
        using var idle = await ConnectAsync(new IPEndPoint(Lab.ServerV4, PublicPort));
        Assert.Equal("v1", TextOf((await RequestAsync(idle, "/")).Body));

        await Service.DeployAsync("v2", TakeoverTimeout, Token, old);
        Assert.Equal(0, await ExitsWithinAsync(v1.Process, TimeSpan.FromSeconds(20)));

        // What http.client does next: send on the pooled connection without looking, and get no answer.
        await idle.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: lab\r\n\r\n"), SocketFlags.None, Token);
        var received = -1;
        try
        {
            received = await idle.ReceiveAsync(new byte[256], SocketFlags.None, Token);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
            received = 0;
        }

        Assert.Equal(0, received);
    }

    /// <summary>Ten handoffs, each launched a second after the previous one took over.</summary>
    private async Task DeployAllAsync(List<LaunchedGeneration> generations)
    {
        await Task.Delay(TimeSpan.FromSeconds(1.5), Token);
        for (var version = 2; version <= Handoffs + 1; version++)
        {
            generations.Add(await Service.DeployAsync($"v{version}", TakeoverTimeout, Token, PolicyArguments()));
            await Task.Delay(TimeSpan.FromSeconds(1), Token);
        }

        // Long enough for every client to come back once more after the last handoff.
        await Task.Delay(MaxIdle + TimeSpan.FromSeconds(1), Token);
    }

    private static void AssertClientsMovedAcross(List<LaunchedGeneration> generations, IEnumerable<string> versions)
    {
        var seen = versions.ToHashSet(StringComparer.Ordinal);
        Assert.Contains("v1", seen);
        Assert.Contains(generations[^1].Text, seen);
        Assert.True(seen.Count >= generations.Count / 2, $"The clients were answered by {string.Join(", ", seen.Order())} only.");
    }

    /// <summary>Each superseded generation exited cleanly once its clients had come back (at most 3 s idle) and moved on.</summary>
    private static async Task AssertSupersededExitedAsync(List<LaunchedGeneration> generations)
    {
        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
            if (PolicyArguments().Length == 0)
            {
                Assert.Contains("idle connections: WaitForClient", old.Process.Output, StringComparison.Ordinal);
            }
        }
    }

    private async Task<Socket> ConnectAsync(IPEndPoint to)
    {
        var socket = Lab.Client.CreateSocket(to.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(to, Token);
        return socket;
    }

    /// <summary>One GET on an open connection: the body (Content-Length or chunked, as the echo app sends it) and the header.</summary>
    private async Task<(string Body, string Headers)> RequestAsync(Socket socket, string path)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n"), SocketFlags.None, Token);
        var buffer = new byte[8192];
        var length = 0;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Token);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, timeout.Token);
            Assert.True(read > 0, $"The connection closed after {length} bytes of the response: '{Encoding.ASCII.GetString(buffer, 0, length)}'.");
            length += read;
            if (ParseResponse(Encoding.ASCII.GetString(buffer, 0, length)) is { } response)
            {
                return response;
            }
        }
    }

    /// <summary>The body and header of a complete response, or null while it is incomplete.</summary>
    private static (string Body, string Headers)? ParseResponse(string text)
    {
        var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (end < 0)
        {
            return null;
        }

        var headers = text[..end];
        var rest = text[(end + 4)..];
        if (headers.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)) is { } lengthLine)
        {
            var bodyLength = int.Parse(lengthLine["Content-Length:".Length..].Trim(), CultureInfo.InvariantCulture);
            return rest.Length >= bodyLength ? (rest[..bodyLength], headers) : null;
        }

        var body = new StringBuilder();
        var position = 0;
        while (rest.IndexOf("\r\n", position, StringComparison.Ordinal) is var lineEnd and >= 0)
        {
            var size = Convert.ToInt32(rest[position..lineEnd].Split(';')[0].Trim(), 16);
            if (size == 0)
            {
                return rest.IndexOf("\r\n", lineEnd + 2, StringComparison.Ordinal) >= 0 ? (body.ToString(), headers) : null;
            }

            if (rest.Length < lineEnd + 2 + size + 2)
            {
                return null;
            }

            body.Append(rest, lineEnd + 2, size);
            position = lineEnd + 2 + size + 2;
        }

        return null;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNameCaseInsensitive = true };

    private sealed record ClientReport(int Ok, int Failed, int Connections, Dictionary<string, int> Versions, List<string> Failures);

    /// <summary>
    /// Clients as an application would write them with the standard library: one http.client.HTTPConnection each, kept
    /// alive and reused for every request with no check (http.client has none), reconnecting only when a response said
    /// Connection: close or a request failed. Bounded by a stop file and a maximum run time.
    /// </summary>
    private const string ClientScript = """
        import http.client, json, os, random, sys, threading, time

        hosts, port, max_idle, seed, max_seconds, stop = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
        lock = threading.Lock()
        report = {"ok": 0, "failed": 0, "connections": 0, "versions": {}, "failures": []}
        deadline = time.monotonic() + max_seconds

        def running():
            return time.monotonic() < deadline and not os.path.exists(stop)

        def client(index, host):
            rng = random.Random(seed + index)
            conn = http.client.HTTPConnection(host, port, timeout=10)
            sock = None
            while running():
                try:
                    conn.request("GET", "/")
                    if conn.sock is not sock:
                        sock = conn.sock
                        with lock:
                            report["connections"] += 1
                    response = conn.getresponse()
                    body = response.read().decode()
                    with lock:
                        if response.status == 200:
                            report["ok"] += 1
                            version = body.split(" ")[0]
                            report["versions"][version] = report["versions"].get(version, 0) + 1
                        else:
                            report["failed"] += 1
                            report["failures"].append(f"{time.strftime('%H:%M:%S')} client {index} {host}: HTTP {response.status}")
                except Exception as e:
                    with lock:
                        report["failed"] += 1
                        report["failures"].append(f"{time.strftime('%H:%M:%S')} client {index} {host}: {type(e).__name__}: {e}")
                    conn.close()
                    sock = None
                pause = time.monotonic() + rng.uniform(0, max_idle)
                while running() and time.monotonic() < pause:
                    time.sleep(0.05)
            conn.close()

        threads = [threading.Thread(target=client, args=(i, h)) for i, h in enumerate(hosts)]
        for t in threads:
            t.start()
        print("started", flush=True)
        for t in threads:
            t.join()
        print(json.dumps(report), flush=True)
        """;
}
