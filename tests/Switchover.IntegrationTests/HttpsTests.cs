using System.Net;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// HTTPS end to end: a certificate made by the test, Kestrel configured the way a user configures it (Kestrel:Endpoints
/// with a PEM certificate and key), TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2 by ALPN, an h2c endpoint beside it, rolling
/// deploys under wrk and h2load, and a certificate replaced on disk while serving.
/// </summary>
public sealed class HttpsTests(ITestOutputHelper output) : TestBase(output)
{
    private const int HttpsPort = 8443;
    private const int Handoffs = 4;

    private SwitchoverService? _https;

    [Fact(Timeout = 180_000)]
    public async Task Tls_1_2_and_tls_1_3_both_handshake_with_the_configured_certificate_and_alpn_picks_h2_or_http_1_1()
    {
        var certificate = await CertificateAsync();
        await Https.DeployAsync("v1", TakeoverTimeout, Token, ServerArguments(certificate));
        await AssertHandshakesAsync(certificate, "v1");

        // The next generation serves the same endpoint, with the same certificate, after the handoff.
        await Https.DeployAsync("v2", TakeoverTimeout, Token, ServerArguments(certificate));
        await AssertHandshakesAsync(certificate, "v2");
    }

    [Fact(Timeout = 240_000)]
    public async Task Wrk_over_tls_with_keep_alive_and_with_a_connection_per_request_loses_no_request_across_handoffs()
    {
        var certificate = await CertificateAsync();
        var arguments = ServerArguments(certificate);
        var current = await Https.DeployAsync("v1", TakeoverTimeout, Token, arguments);
        var duration = TimeSpan.FromSeconds(Handoffs * 6 + 4);
        var keepAlive = Track(WrkClient.Start(Lab.Client, new Uri($"https://{Lab.ServerV4}:{HttpsPort}/"), 8, duration));
        var perRequest = Track(WrkClient.Start(Lab.Client, new Uri($"https://[{Lab.ServerV6}]:{HttpsPort}/"), 4, duration, connectionClose: true));

        await Task.Delay(TimeSpan.FromSeconds(2), Token);
        for (var handoff = 1; handoff <= Handoffs; handoff++)
        {
            var next = await Https.DeployAsync($"v{handoff + 1}", TakeoverTimeout, Token, arguments);
            Assert.Equal(0, await ExitsWithinAsync(current.Process, TimeSpan.FromSeconds(40)));
            current = next;
            await Task.Delay(TimeSpan.FromSeconds(2), Token);
        }

        await AssertWrkCleanAsync(duration, $"over {Handoffs} handoffs", ("keep-alive, IPv4", keepAlive), ("Connection: close, IPv6", perRequest));
    }

    [Fact(Timeout = 240_000)]
    public async Task H2load_over_tls_negotiates_h2_and_loses_no_stream_across_handoffs()
    {
        var certificate = await CertificateAsync();
        var arguments = ServerArguments(certificate);
        var v1 = await Https.DeployAsync("v1", TakeoverTimeout, Token, arguments);
        var options = new H2LoadOptions { Connections = 16, StreamsPerConnection = 32, Duration = TimeSpan.FromSeconds(15) };

        var runs = await RollingH2Load.RunAsync(Https, Lab.Client, v1, Handoffs,
            handoff => new Uri(handoff % 2 == 1 ? $"https://{Lab.ServerV4}:{HttpsPort}/" : $"https://[{Lab.ServerV6}]:{HttpsPort}/"),
            options, arguments, Output, Token);

        Output.WriteLine($"{Handoffs} handoffs: {H2LoadResult.Sum([.. runs.Select(r => r.Result)])}");
        Assert.All(runs, run => Assert.Equal("h2", run.Result.ApplicationProtocol));
        Assert.All(runs, run => Assert.Equal("TLSv1.3", run.Result.TlsProtocol));
        H2LoadRun.AssertCleanAndMoved(runs, options);
    }

    [Fact(Timeout = 240_000)]
    public async Task H2load_h2c_on_the_http_endpoint_beside_the_https_one_loses_no_stream_across_handoffs()
    {
        var certificate = await CertificateAsync();
        var arguments = ServerArguments(certificate);
        var v1 = await Https.DeployAsync("v1", TakeoverTimeout, Token, arguments);
        var options = new H2LoadOptions { Connections = 8, StreamsPerConnection = 16, Duration = TimeSpan.FromSeconds(15) };

        var runs = await RollingH2Load.RunAsync(Https, Lab.Client, v1, Handoffs,
            handoff => new Uri(handoff % 2 == 1 ? $"http://{Lab.ServerV4}:{PublicPort}/" : $"http://[{Lab.ServerV6}]:{PublicPort}/"),
            options, arguments, Output, Token);

        Output.WriteLine($"{Handoffs} handoffs: {H2LoadResult.Sum([.. runs.Select(r => r.Result)])}");
        Assert.All(runs, run => Assert.Equal("h2c", run.Result.ApplicationProtocol));
        H2LoadRun.AssertCleanAndMoved(runs, options);
    }

    [Fact(Timeout = 180_000)]
    public async Task A_certificate_replaced_on_disk_is_served_to_new_connections_without_a_failed_request()
    {
        var certificate = await CertificateAsync();
        await Https.DeployAsync("v1", TakeoverTimeout, Token, ServerArguments(certificate));
        var network = new IPEndPoint(Lab.ServerV4, HttpsPort);
        var first = await TlsHandshake.RunAsync(Lab.Client, network, "-tls1_3", "h2", Token);
        Assert.Equal(certificate.Thumbprint, first.Thumbprint);

        var duration = TimeSpan.FromSeconds(14);
        var keepAlive = Track(WrkClient.Start(Lab.Client, new Uri($"https://{network}/"), 8, duration));
        var perRequest = Track(WrkClient.Start(Lab.Client, new Uri($"https://{network}/"), 4, duration, connectionClose: true));
        await Task.Delay(TimeSpan.FromSeconds(3), Token);

        var old = certificate.Thumbprint;
        await certificate.RenewAsync("switchover-test renewed", Token);
        Output.WriteLine($"certificate {old} replaced on disk by {certificate.Thumbprint}");

        // Kestrel watches the certificate files of its configured endpoints; new connections get the new certificate.
        var served = await WaitForCertificateAsync(network, certificate.Thumbprint, TimeSpan.FromSeconds(8));
        Output.WriteLine($"served to new connections after {served.TotalMilliseconds:0} ms");
        var localhost = await TlsHandshake.RunAsync(Lab.Server, new IPEndPoint(IPAddress.Loopback, HttpsPort), "-tls1_2", "http/1.1", Token);
        Assert.Equal(certificate.Thumbprint, localhost.Thumbprint);

        await AssertWrkCleanAsync(duration, "across the certificate change", ("keep-alive", keepAlive), ("Connection: close", perRequest));
    }

    /// <summary>
    /// The endpoints the way a user writes them: HTTPS on 8443 with a PEM certificate and key, HTTP/1.1 and HTTP/2 by
    /// ALPN; and cleartext HTTP/2 (h2c, prior knowledge) on the public port 8080. They override the lab's --urls.
    /// </summary>
    private static string[] ServerArguments(TestCertificate certificate) =>
    [
        $"--Kestrel:Endpoints:Https:Url=https://*:{HttpsPort}",
        $"--Kestrel:Endpoints:Https:Certificate:Path={certificate.CertPath}",
        $"--Kestrel:Endpoints:Https:Certificate:KeyPath={certificate.KeyPath}",
        "--Kestrel:Endpoints:Https:Protocols=Http1AndHttp2",
        $"--Kestrel:Endpoints:Http:Url=http://*:{PublicPort}",
        "--Kestrel:Endpoints:Http:Protocols=Http2",
    ];

    private async Task<TestCertificate> CertificateAsync()
    {
        var certificate = await TestCertificate.CreateAsync(Token);
        Track(new DeleteOnDispose(certificate));
        Output.WriteLine($"test certificate {certificate.Thumbprint} in {certificate.Directory}");
        return certificate;
    }

    /// <summary>The lab's service, with the endpoints named by Kestrel:Endpoints alone (no --urls beside them).</summary>
    private SwitchoverService Https => _https ??= Track(new SwitchoverService(Lab.Server, Artifacts.EchoServer, PublicPort) { Urls = null });


    private async Task AssertHandshakesAsync(TestCertificate certificate, string generation)
    {
        var cases = new (NetworkNamespace From, IPEndPoint To, string Version, string Expected, string Alpn)[]
        {
            (Lab.Client, new IPEndPoint(Lab.ServerV4, HttpsPort), "-tls1_2", "TLSv1.2", "h2"),
            (Lab.Client, new IPEndPoint(Lab.ServerV4, HttpsPort), "-tls1_3", "TLSv1.3", "http/1.1"),
            (Lab.Client, new IPEndPoint(Lab.ServerV6, HttpsPort), "-tls1_2", "TLSv1.2", "http/1.1"),
            (Lab.Client, new IPEndPoint(Lab.ServerV6, HttpsPort), "-tls1_3", "TLSv1.3", "h2"),
            (Lab.Server, new IPEndPoint(IPAddress.Loopback, HttpsPort), "-tls1_3", "TLSv1.3", "h2"),
            (Lab.Server, new IPEndPoint(IPAddress.IPv6Loopback, HttpsPort), "-tls1_2", "TLSv1.2", "http/1.1"),
        };
        foreach (var (from, to, version, expected, alpn) in cases)
        {
            var handshake = await TlsHandshake.RunAsync(from, to, version, alpn, Token);
            Output.WriteLine($"{generation}: {from.Name} -> {to} {version} offering {alpn}: {handshake}");
            Assert.True(handshake.Protocol == expected, $"{version} to {to} negotiated {handshake.Protocol ?? "nothing"}:\n{handshake.Output}");
            Assert.Equal(alpn, handshake.Alpn);
            Assert.Equal(certificate.Thumbprint, handshake.Thumbprint);
        }
    }

    /// <summary>Waits for every wrk run, prints every count, then asserts that each completed requests and failed none.</summary>
    private async Task AssertWrkCleanAsync(TimeSpan duration, string during, params (string Name, LabProcess Wrk)[] runs)
    {
        var counts = new List<(string Name, WrkResult Count)>();
        foreach (var (name, wrk) in runs)
        {
            await wrk.Exited.WaitAsync(duration + TimeSpan.FromSeconds(30), Token);
            var count = WrkResult.Parse(wrk.Output);
            Output.WriteLine($"{name}: {count} {during}");
            counts.Add((name, count));
        }

        Assert.All(counts, c => Assert.True(c.Count.Requests > 0, $"wrk ({c.Name}) completed no request:\n{c.Count.Output}"));
        Assert.All(counts, c => Assert.True(c.Count.Failures == 0, $"wrk ({c.Name}) counted failures {during}: {c.Count}"));
    }

    private async Task<TimeSpan> WaitForCertificateAsync(IPEndPoint endpoint, string sha256, TimeSpan timeout)
    {
        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        TlsHandshake? last = null;
        while (elapsed.Elapsed < timeout)
        {
            last = await TlsHandshake.RunAsync(Lab.Client, endpoint, "-tls1_3", "h2", Token);
            if (last.Thumbprint == sha256)
            {
                return elapsed.Elapsed;
            }

            await Task.Delay(200, Token);
        }

        Assert.Fail($"New connections to {endpoint} still got {last?.Thumbprint ?? "no certificate"} {timeout.TotalSeconds} s after the files changed; expected {sha256}.\n{last?.Output}");
        return elapsed.Elapsed;
    }

    private sealed class DeleteOnDispose(IDisposable disposable) : IAsyncDisposable
    {
        public ValueTask DisposeAsync()
        {
            disposable.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
