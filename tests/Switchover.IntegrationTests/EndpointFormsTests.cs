using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// Every way an ASP.NET Core app names its endpoints is handed off five times under load with no failed request, on
/// the port and addresses that form names (and only those); forms that cannot be handed off fail at start with
/// their reason.
/// </summary>
public sealed class EndpointFormsTests(ITestOutputHelper output) : TestBase(output)
{
    private const int Handoffs = 5;
    private const int HttpsPort = 8443;

    /// <summary>A form: the generation's arguments and environment, the client paths it must serve and those it must not.</summary>
    public sealed record Form(string[] Arguments, Dictionary<string, string>? Environment, string[] Served, string[] NotServed);

    private static readonly Dictionary<string, Form> HttpForms = new()
    {
        ["urls *"] = new(["--urls", "http://*:8080"], null, All, []),
        ["urls +"] = new(["--urls", "http://+:8080"], null, All, []),
        ["urls 0.0.0.0 (IPv4 only)"] = new(["--urls", "http://0.0.0.0:8080"], null, ["network-v4", "localhost-v4"], ["network-v6"]),
        ["urls [::]"] = new(["--urls", "http://[::]:8080"], null, All, []),
        ["urls localhost"] = new(["--urls", "http://localhost:8080"], null, ["localhost-v4", "localhost-v6"], ["network-v4", "network-v6"]),
        ["urls one address"] = new(["--urls", "http://192.0.2.1:8080"], null, ["network-v4"], ["localhost-v4", "network-v6"]),
        ["ASPNETCORE_URLS"] = new([], new() { ["ASPNETCORE_URLS"] = "http://*:8080" }, All, []),
        ["ASPNETCORE_HTTP_PORTS"] = new([], new() { ["ASPNETCORE_HTTP_PORTS"] = "8080" }, All, []),
        ["DOTNET_HTTP_PORTS"] = new([], new() { ["DOTNET_HTTP_PORTS"] = "8080" }, All, []),
        ["--HTTP_PORTS"] = new(["--HTTP_PORTS=8080"], null, All, []),
        ["UseUrls in code"] = new(["--Code:UseUrls=http://[::]:8080"], null, All, []),
        ["Kestrel:Endpoints"] = new(["--Kestrel:Endpoints:Web:Url=http://*:8080"], null, All, []),
        ["ListenAnyIP in code"] = new(["--Code:Listen=anyip:8080"], null, All, []),
        ["Listen(IPAddress.Any) in code"] = new(["--Code:Listen=any:8080"], null, ["network-v4", "localhost-v4"], ["network-v6"]),
        ["ListenLocalhost in code"] = new(["--Code:Listen=localhost:8080"], null, ["localhost-v4", "localhost-v6"], ["network-v4"]),
    };

    private static readonly Dictionary<string, string[]> HttpsForms = new()
    {
        ["ASPNETCORE_HTTPS_PORTS + Kestrel:Certificates:Default"] =
            ["--HTTPS_PORTS=8443", "--Kestrel:Certificates:Default:Path={cert}", "--Kestrel:Certificates:Default:KeyPath={key}"],
        ["Kestrel:Endpoints https with a PEM certificate"] =
            ["--Kestrel:Endpoints:Tls:Url=https://*:8443", "--Kestrel:Endpoints:Tls:Certificate:Path={cert}", "--Kestrel:Endpoints:Tls:Certificate:KeyPath={key}",
             "--Kestrel:Endpoints:Tls:SslProtocols:0=Tls13", "--Kestrel:Endpoints:Tls:ClientCertificateMode=AllowCertificate"],
        ["Listen with UseHttps in code"] = ["--Code:Listen=anyip:8443:https", "--Code:CertPath={cert}", "--Code:KeyPath={key}"],
        ["Kestrel:Endpoints https with Sni"] =
            ["--Kestrel:Endpoints:Tls:Url=https://*:8443",
             "--Kestrel:Endpoints:Tls:Sni:*.example.com:Certificate:Path={cert}", "--Kestrel:Endpoints:Tls:Sni:*.example.com:Certificate:KeyPath={key}",
             "--Kestrel:Endpoints:Tls:Sni:*.example.com:Protocols=Http1",
             "--Kestrel:Endpoints:Tls:Sni:*:Certificate:Path={cert}", "--Kestrel:Endpoints:Tls:Sni:*:Certificate:KeyPath={key}",
             "--Kestrel:Endpoints:Tls:Sni:*:SslProtocols:0=Tls12"],
    };

    private static string[] All => ["network-v4", "network-v6", "localhost-v4", "localhost-v6"];

    public static TheoryData<string> HttpFormNames => [.. HttpForms.Keys];

    public static TheoryData<string> HttpsFormNames => [.. HttpsForms.Keys];

    [Theory(Timeout = 180_000)]
    [MemberData(nameof(HttpFormNames))]
    public async Task Each_http_endpoint_form_hands_off_under_load_on_the_addresses_it_names_only(string name)
    {
        var form = HttpForms[name];
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { Urls = null });
        var targets = AllPaths().Where(t => form.Served.Contains(t.Name)).ToList();
        var generations = new List<LaunchedGeneration> { await service.DeployAsync("v1", TakeoverTimeout, Token, form.Arguments, form.Environment) };
        await using var load = HttpLoad.Start(targets, Load(ConnectionMode.NewConnectionPerRequest, TimeSpan.FromMinutes(2), concurrency: 1), Token);
        await using var keepAlive = HttpLoad.Start(targets, Load(ConnectionMode.KeepAlive, TimeSpan.FromMinutes(2), concurrency: 1), Token);
        for (var version = 2; version <= Handoffs + 1; version++)
        {
            await Task.Delay(TimeSpan.FromSeconds(0.7), Token);
            generations.Add(await service.DeployAsync($"v{version}", TakeoverTimeout, Token, form.Arguments, form.Environment));
        }

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        var newConnections = await load.StopAsync(Token);
        var kept = await keepAlive.StopAsync(Token);

        AssertNoFailures(newConnections);
        AssertNoFailures(kept);
        foreach (var target in targets)
        {
            Assert.Contains(newConnections.RecentResponses, r => r.Target == target.Name && TextOf(r.Body) == $"v{Handoffs + 1}");
        }

        foreach (var path in AllPaths().Where(t => form.NotServed.Contains(t.Name)))
        {
            await AssertNotServedAsync(path);
        }

        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {newConnections.TotalRequests + kept.TotalRequests} requests, 0 failed, {Handoffs} handoffs, paths {string.Join(", ", form.Served)}"));
        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
        }
    }

    [Theory(Timeout = 180_000)]
    [MemberData(nameof(HttpsFormNames))]
    public async Task Each_https_endpoint_form_hands_off_with_its_tls_settings_and_no_failed_request(string name)
    {
        using var certificate = await TestCertificate.CreateAsync(Token);
        var arguments = HttpsForms[name].Select(a => a.Replace("{cert}", certificate.CertPath, StringComparison.Ordinal)
            .Replace("{key}", certificate.KeyPath, StringComparison.Ordinal)).ToArray();
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, HttpsPort) { Urls = null });
        var generations = new List<LaunchedGeneration> { await service.DeployAsync("v1", TakeoverTimeout, Token, arguments) };

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var clients = new[] { new IPEndPoint(Lab.ServerV4, HttpsPort), new IPEndPoint(Lab.ServerV6, HttpsPort) }
            .Select(endpoint => Task.Run(() => TlsLoadAsync(endpoint, certificate.Thumbprint, stop.Token), CancellationToken.None)).ToList();
        for (var version = 2; version <= Handoffs + 1; version++)
        {
            await Task.Delay(TimeSpan.FromSeconds(0.7), Token);
            generations.Add(await service.DeployAsync($"v{version}", TakeoverTimeout, Token, arguments));
        }

        await Task.Delay(TimeSpan.FromSeconds(1), Token);
        await stop.CancelAsync();
        var results = await Task.WhenAll(clients);

        var failures = results.SelectMany(r => r.Failures).ToList();
        Assert.True(failures.Count == 0, $"{failures.Count} TLS requests failed: {string.Join("; ", failures.Take(5))}");
        Assert.All(results, r => Assert.True(r.Requests > 0, "A TLS client sent no request."));
        Assert.All(results, r => Assert.Equal($"v{Handoffs + 1}", TextOf(r.LastBody)));
        Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {results.Sum(r => r.Requests)} TLS requests (new connection each), 0 failed, {Handoffs} handoffs"));
        foreach (var old in generations.SkipLast(1))
        {
            Assert.Equal(0, await ExitsWithinAsync(old.Process, TimeSpan.FromSeconds(30)));
        }
    }

    [Theory(Timeout = 60_000)]
    [InlineData("--Code:Listen=handle:3", "from file handle 3")]
    [InlineData("--Code:Listen=anyip:0", "asks the kernel for a port (0). A public endpoint needs a fixed port")]
    [InlineData("--Code:Listen=ip:198.51.100.7:8080", "198.51.100.7")]
    public async Task An_endpoint_that_cannot_move_fails_at_start_with_its_reason_and_changes_nothing(string argument, string message)
    {
        var before = await Service.RulesetAsync(Token);
        var service = Track(new SwitchoverService(Lab.Server, Artifacts.TestServer, PublicPort) { Urls = null });
        var process = service.Launch("bad", [argument]);

        Assert.Equal(1, await ExitsWithinAsync(process, TimeSpan.FromSeconds(60)));
        Assert.Contains(message, process.Output, StringComparison.Ordinal);
        Assert.Contains("this generation did not take over", process.Output, StringComparison.Ordinal);
        Assert.Equal(before, await Service.RulesetAsync(Token));
        Assert.False(Directory.Exists(service.StateDirectory));
    }

    /// <summary>A path the form does not name gets no answer from the app: refused (nothing listens there) or no answer in time.</summary>
    private async Task AssertNotServedAsync(LoadTarget path) =>
        Assert.NotEqual(ProbeOutcome.Connected, await HostFirewall.ProbeAsync(path.Namespace, path.EndPoint, TimeSpan.FromSeconds(2), Token));

    private sealed record TlsLoadResult(long Requests, List<string> Failures, string LastBody);

    /// <summary>GETs over TLS (the test's own certificate, checked by thumbprint), a new connection each (so nothing is retried on a pooled connection), until stopped or 60 s.</summary>
    private async Task<TlsLoadResult> TlsLoadAsync(IPEndPoint endpoint, string thumbprint, CancellationToken stop)
    {
        using var handler = HandlerFrom(Lab.Client, endpoint);
        handler.SslOptions.RemoteCertificateValidationCallback = (_, served, _, _) => served?.GetCertHashString() == thumbprint;
        using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };
        var host = endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{endpoint.Address}]" : endpoint.Address.ToString();
        var uri = new Uri($"https://{host}:{endpoint.Port}/");
        var failures = new List<string>();
        var lastBody = string.Empty;
        long requests = 0;
        var clock = Stopwatch.StartNew();
        while (!stop.IsCancellationRequested && clock.Elapsed < TimeSpan.FromSeconds(60) && requests < 100_000)
        {
            try
            {
                using var response = await client.GetAsync(uri, CancellationToken.None);
                lastBody = await response.Content.ReadAsStringAsync(CancellationToken.None);
                if (!response.IsSuccessStatusCode)
                {
                    failures.Add($"{uri}: {(int)response.StatusCode}");
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                failures.Add($"{uri}: {e.GetType().Name}: {e.Message}");
            }

            requests++;
        }

        return new TlsLoadResult(requests, failures, lastBody);
    }
}
