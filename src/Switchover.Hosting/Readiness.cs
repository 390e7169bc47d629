using System.Net;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// The new generation is ready when the host has started, the app's health checks report Healthy and a real request
/// to each of its own private ports is answered without a server error.
/// </summary>
internal sealed class Readiness(HealthCheckService? healthChecks, SwitchoverOptions options, ILogger logger)
{
    private static readonly TimeSpan RetryInterval = TimeSpan.FromMilliseconds(100);

    /// <param name="tlsPorts">Public ports served over TLS: their private ports are probed with HTTPS.</param>
    public async Task WaitAsync(IReadOnlyList<PortMapping> ports, IReadOnlySet<int> tlsPorts, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.ReadinessTimeout);
        using var http = CreateClient(options, TimeSpan.FromSeconds(5));
        var reason = "not checked yet";
        try
        {
            while (true)
            {
                reason = await CheckOnceAsync(http, ports, tlsPorts, timeout.Token).ConfigureAwait(false);
                if (reason is null)
                {
                    return;
                }

                Log.NotReady(logger, reason);
                await Task.Delay(RetryInterval, timeout.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException(
                $"Not ready after {options.ReadinessTimeout.TotalSeconds:0.#} s (Switchover:ReadinessTimeout): {reason}");
        }
    }

    /// <summary>
    /// One probe of another generation's private ports, as a new generation probes its own before it takes over (the
    /// health checks of this process say nothing about that one, so they are left out).
    /// </summary>
    /// <returns>Null when every port answered, otherwise why not.</returns>
    public static async Task<string?> ProbeAsync(SwitchoverOptions options, IReadOnlyList<PortMapping> ports, IReadOnlySet<int> tlsPorts,
        TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var http = CreateClient(options, timeout);
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(timeout);
        try
        {
            return await new Readiness(null, options, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
                .CheckOnceAsync(http, ports, tlsPorts, bound.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"no answer within {timeout.TotalSeconds:0.#} s";
        }
    }

    private static HttpClient CreateClient(SwitchoverOptions options, TimeSpan timeout) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        PooledConnectionLifetime = TimeSpan.Zero,
        SslOptions =
        {
            // The probe asks a private port of this service on loopback, not a peer: the certificate is the one it
            // serves, whatever names or issuer it carries, and nothing secret is sent.
#pragma warning disable CA5359
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
#pragma warning restore CA5359
            TargetHost = options.ReadinessHost,
        },
    })
    {
        Timeout = timeout,
    };

    private async Task<string?> CheckOnceAsync(HttpClient http, IReadOnlyList<PortMapping> ports, IReadOnlySet<int> tlsPorts, CancellationToken cancellationToken)
    {
        if (healthChecks is not null)
        {
            var report = await healthChecks.CheckHealthAsync(cancellationToken).ConfigureAwait(false);
            if (report.Status != HealthStatus.Healthy)
            {
                var failing = report.Entries.Where(e => e.Value.Status != HealthStatus.Healthy)
                    .Select(e => $"{e.Key}={e.Value.Status}{(e.Value.Description is { } d ? $" ({d})" : string.Empty)}");
                return $"health checks report {report.Status}: {string.Join(", ", failing)}";
            }
        }

        foreach (var port in ports)
        {
            if (options.ReadinessProbe == ReadinessProbe.Tcp)
            {
                using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port.PrivatePort), cancellationToken).ConfigureAwait(false);
                    continue;
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    return $"connecting to 127.0.0.1:{port.PrivatePort} failed: {e.Message}";
                }
            }

            var scheme = tlsPorts.Contains(port.PublicPort) ? "https" : "http";
            var uri = new Uri($"{scheme}://{IPAddress.Loopback}:{port.PrivatePort}{options.ReadinessPath}");
            if (await GetAsync(http, uri, HttpVersion.Version11, cancellationToken).ConfigureAwait(false) is { } http1Failure
                && (scheme == "https" || await GetAsync(http, uri, HttpVersion.Version20, cancellationToken).ConfigureAwait(false) is not null))
            {
                // HTTP/2 with prior knowledge is tried on cleartext endpoints that speak only HTTP/2; over TLS, ALPN
                // already offered it.
                return http1Failure;
            }
        }

        return null;
    }

    /// <summary>One GET; null when it was answered below 500, otherwise why not.</summary>
    private static async Task<string?> GetAsync(HttpClient http, Uri uri, Version version, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, uri)
        {
            Version = version,
            VersionPolicy = version == HttpVersion.Version20 ? HttpVersionPolicy.RequestVersionExact : HttpVersionPolicy.RequestVersionOrHigher,
        };
        try
        {
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
            return (int)response.StatusCode >= 500 ? $"GET {uri} answered {(int)response.StatusCode}" : null;
        }
        catch (HttpRequestException e)
        {
            return $"GET {uri} failed: {e.Message}";
        }
        catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            return $"GET {uri} timed out: {e.Message}";
        }
    }
}
