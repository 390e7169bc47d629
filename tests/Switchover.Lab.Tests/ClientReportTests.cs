namespace Switchover.Lab.Tests;

/// <summary>The reports of h2load and wrk, as they print them (captured from real runs), read into counts.</summary>
public sealed class ClientReportTests
{
    // h2load nghttp2/1.52.0 over TLS, a run whose connections were told to go away: one "Process Request Failure" per
    // connection, 16 streams lost with a connection (started - done), none counted as failed.
    private const string H2LoadReport = """
        starting benchmark...
        spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 8s of main duration for measurements.
        Warm-up phase is over for thread #0.
        Main benchmark duration is started for thread #0.
        TLS Protocol: TLSv1.3
        Cipher: TLS_AES_256_GCM_SHA384
        Server Temp Key: X25519 253 bits
        Application protocol: h2
        Process Request Failure:1
        Process Request Failure:2
        Main benchmark duration is over for thread #0. Stopping all clients.
        Stopped all clients for thread #0

        finished in 8.00s, 10587.50 req/s, 320.78KB/s
        requests: 84700 total, 84716 started, 84700 done, 84698 succeeded, 2 failed, 1 errored, 0 timeout
        status codes: 84699 2xx, 0 3xx, 0 4xx, 0 5xx
        traffic: 2.51MB (2627184) total, 331.24KB (339188) headers (space savings 95.68%), 744.43KB (762300) data
        """;

    private const string WrkReport = """
        Running 8s test @ https://192.0.2.1:8443/
          1 threads and 8 connections
          Thread Stats   Avg      Stdev     Max   +/- Stdev
            Latency     2.35ms    6.66ms  94.34ms   97.32%
            Req/Sec     7.10k     3.68k   23.93k    81.01%
          56249 requests in 8.01s, 8.64MB read
          Socket errors: connect 49, read 8, write 0, timeout 0
          Non-2xx or 3xx responses: 3
        Requests/sec:   7023.22
        Transfer/sec:      1.08MB
        """;

    [Fact]
    public void H2load_summary_is_read_with_its_protocols_and_the_streams_it_abandoned()
    {
        var result = H2LoadResult.Parse(H2LoadReport);

        Assert.Equal((84700L, 84716L, 84700L, 84698L, 2L, 1L, 0L), (result.Total, result.Started, result.Done, result.Succeeded, result.Failed, result.Errored, result.TimedOut));
        Assert.Equal(16, result.Abandoned);
        Assert.False(result.Clean);
        Assert.Equal("h2", result.ApplicationProtocol);
        Assert.Equal("TLSv1.3", result.TlsProtocol);
    }

    [Fact]
    public void H2load_runs_add_up()
    {
        var one = H2LoadResult.Parse(H2LoadReport);

        var sum = H2LoadResult.Sum([one, one]);

        Assert.Equal((169400L, 169432L, 4L, 32L), (sum.Total, sum.Started, sum.Failed, sum.Abandoned));
    }

    [Fact]
    public void A_report_without_the_requests_line_is_refused_with_the_output()
    {
        var e = Assert.Throws<FormatException>(() => H2LoadResult.Parse("h2load: invalid option -- 'x'"));

        Assert.Contains("invalid option", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Wrk_report_counts_socket_errors_and_responses_outside_2xx_and_3xx_as_failures()
    {
        var count = WrkResult.Parse(WrkReport);

        Assert.Equal((56249L, 49L, 8L, 0L, 0L, 3L), (count.Requests, count.ConnectErrors, count.ReadErrors, count.WriteErrors, count.TimeoutErrors, count.Non2xx3xx));
        Assert.Equal(60, count.Failures);
    }

    [Fact]
    public void Wrk_report_without_errors_has_no_failures()
    {
        var count = WrkResult.Parse("  1000 requests in 1.00s, 10.00KB read\nRequests/sec: 1000.00\n");

        Assert.Equal((1000L, 0L), (count.Requests, count.Failures));
    }
}
