// Rolling deploy demo: v1 of samples/EchoServer in a network namespace, clients on a second namespace (network path)
// and on the server itself (localhost path), keep-alive and new-connection load at once, then v2..vN deployed one
// after another by simply launching them. Prints requests, failures and handoff times; exits 1 if anything failed.
// The server runs behind a default-deny host firewall that allows only port 8080, as production hosts do:
//   --firewall ufw (default: the ruleset ufw writes for "ufw default deny incoming; ufw allow 8080/tcp")
//   --firewall nft | firewalld | docker | none
using System.Globalization;
using System.Net;
using Switchover.Lab;

var generations = ReadOption(args, "--generations", 6);
var interval = TimeSpan.FromSeconds(ReadOption(args, "--interval", 3));
var firewallIndex = Array.IndexOf(args, "--firewall");
var firewallName = firewallIndex >= 0 && firewallIndex + 1 < args.Length ? args[firewallIndex + 1] : "ufw";
var shapes = new Dictionary<string, FirewallShape?>(StringComparer.OrdinalIgnoreCase)
{
    ["ufw"] = FirewallShape.Ufw,
    ["nft"] = FirewallShape.NftPolicyDrop,
    ["firewalld"] = FirewallShape.Firewalld,
    ["docker"] = FirewallShape.DockerWithDefaultDenyInput,
    ["none"] = null,
};
if (!shapes.TryGetValue(firewallName, out var firewall))
{
    Console.Error.WriteLine($"--firewall '{firewallName}' is unknown: use one of {string.Join(", ", shapes.Keys)}.");
    return 2;
}

if (Environment.UserName != "root")
{
    Console.Error.WriteLine("The demo builds network namespaces and nftables rules: run it as root.");
    return 2;
}

using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(10));
var token = timeout.Token;
await using var lab = await TwoHostLab.CreateAsync(token);
await using var service = new SwitchoverService(lab.Server, publicPort: 8080, name: "demo");
Console.WriteLine($"Lab: server {lab.Server} ({lab.ServerV4}, {lab.ServerV6}), client {lab.Client}; public port 8080, Switchover namespace '{service.Name}'.");
if (firewall is { } shape)
{
    await HostFirewall.ApplyAsync(lab.Server, shape, token);
    await HostFirewall.EnsureDefaultDenyAsync(shape, lab.Server, lab.Client, [lab.ServerV4, lab.ServerV6], token);
    Console.WriteLine($"Host firewall on the server: {shape}, default deny, only port 8080 allowed (nothing opened for Switchover).");
}

var deployed = new List<LaunchedGeneration> { await service.DeployAsync("v1", TimeSpan.FromSeconds(60), token) };
Console.WriteLine($"v1 serving (pid {deployed[0].Process.Pid}), launch to serving {deployed[0].LaunchToServing.TotalMilliseconds:0} ms");

LoadTarget[] targets =
[
    new(lab.Client, new IPEndPoint(lab.ServerV4, 8080), "network-v4"),
    new(lab.Client, new IPEndPoint(lab.ServerV6, 8080), "network-v6"),
    new(lab.Server, new IPEndPoint(IPAddress.Loopback, 8080), "localhost-v4"),
    new(lab.Server, new IPEndPoint(IPAddress.IPv6Loopback, 8080), "localhost-v6"),
];
LoadRun StartLoad(ConnectionMode mode) => HttpLoad.Start(targets, new LoadOptions
{
    Mode = mode,
    Concurrency = 2,
    MaxDuration = TimeSpan.FromMinutes(5),
    MaxRequests = long.MaxValue,
    BodyValidator = body => body.StartsWith('v'),
}, token);

await using var keepAlive = StartLoad(ConnectionMode.KeepAlive);
await using var newConnections = StartLoad(ConnectionMode.NewConnectionPerRequest);
await Task.Delay(interval, token);
for (var version = 2; version <= generations; version++)
{
    var generation = await service.DeployAsync($"v{version}", TimeSpan.FromSeconds(60), token);
    deployed.Add(generation);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"v{version} took over (pid {generation.Process.Pid}), launch to serving {generation.LaunchToServing.TotalMilliseconds:0} ms; " +
        $"so far {keepAlive.OkRequests + newConnections.OkRequests} ok, {keepAlive.FailedRequests + newConnections.FailedRequests} failed"));
    await Task.Delay(interval, token);
}

var results = new[] { await keepAlive.StopAsync(token), await newConnections.StopAsync(token) };
var exited = 0;
foreach (var old in deployed.SkipLast(1))
{
    try
    {
        await old.Process.Exited.WaitAsync(TimeSpan.FromSeconds(30), token);
        exited++;
    }
    catch (TimeoutException)
    {
        Console.WriteLine($"v? pid {old.Process.Pid} did not exit within 30 s of being superseded.");
    }
}

Console.WriteLine();
foreach (var result in results)
{
    Console.WriteLine(result.Summary);
    foreach (var failure in result.Failures.Take(10))
    {
        Console.WriteLine("  " + failure);
    }
}

var requests = results.Sum(r => r.TotalRequests);
var failed = results.Sum(r => r.FailureCount) + results.Sum(r => r.StaleConnectionsDiscarded);
var launch = deployed.Skip(1).Select(g => g.LaunchToServing.TotalMilliseconds).Order().ToList();
Console.WriteLine();
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"RESULT: {requests} requests, {failed} failed, {deployed.Count - 1} handoffs, {exited}/{deployed.Count - 1} old generations exited on their own; " +
    $"launch to serving median {launch[launch.Count / 2]:0} ms, max {launch[^1]:0} ms"));
Console.WriteLine(failed == 0 && exited == deployed.Count - 1 ? "PASS: no request failed." : "FAIL");
return failed == 0 && exited == deployed.Count - 1 ? 0 : 1;

static int ReadOption(string[] args, string name, int fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length && int.TryParse(args[index + 1], CultureInfo.InvariantCulture, out var value) && value > 0
        ? value
        : fallback;
}
