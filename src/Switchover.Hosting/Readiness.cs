using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// The new generation is ready when the host has started, the app's health checks report Healthy and a real request
/// to each of its own private ports is answered without a server error: HTTP/1.1 on a plain socket
/// (<see cref="StatusLineProbe"/>), HTTP/2 where the endpoint speaks only that.
/// </summary>
/// <param name="healthChecks">The app's health checks (<see cref="AppHealthChecks.Find"/>): null when healthy, otherwise why not.</param>
internal sealed class Readiness(Func<CancellationToken, Task<string?>>? healthChecks, SwitchoverOptions options, ILogger logger)
{
    private static readonly TimeSpan RetryInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>How long one readiness request may take.</summary>
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    /// <summary>When <see cref="WaitAsync"/> found the generation ready (the launch waterfall's "ready").</summary>
    /// <remarks>A property, not a <c>Task&lt;DateTime&gt;</c>: see <see cref="StatusLineAnswer"/>.</remarks>
    public DateTime ReadyAt { get; private set; }

    /// <param name="tlsPorts">Public ports served over TLS: their private ports are probed with HTTPS.</param>
    public async Task WaitAsync(IReadOnlyList<PortMapping> ports, IReadOnlySet<int> tlsPorts, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.ReadinessTimeout);
        using var http2 = new Http2Fallback(options, RequestTimeout);
        var reason = "not checked yet";
        try
        {
            while (true)
            {
                reason = await CheckOnceAsync(http2, ports, tlsPorts, RequestTimeout, timeout.Token).ConfigureAwait(false);
                if (reason is null)
                {
                    ReadyAt = DateTime.UtcNow;
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
        using var http2 = new Http2Fallback(options, timeout);
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(timeout);
        try
        {
            return await new Readiness(null, options, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
                .CheckOnceAsync(http2, ports, tlsPorts, timeout, bound.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"no answer within {timeout.TotalSeconds:0.#} s";
        }
    }

    private async Task<string?> CheckOnceAsync(Http2Fallback http2, IReadOnlyList<PortMapping> ports, IReadOnlySet<int> tlsPorts,
        TimeSpan requestTimeout, CancellationToken cancellationToken)
    {
        if (healthChecks is not null && await healthChecks(cancellationToken).ConfigureAwait(false) is { } unhealthy)
        {
            return unhealthy;
        }

        foreach (var port in ports)
        {
            var endpoint = new IPEndPoint(IPAddress.Loopback, port.PrivatePort);
            if (options.ReadinessProbe == ReadinessProbe.Tcp)
            {
                using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                try
                {
                    await socket.ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
                    continue;
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    return $"connecting to {endpoint} failed: {e.Message}";
                }
            }

            var tls = tlsPorts.Contains(port.PublicPort);
            var uri = new Uri($"{(tls ? "https" : "http")}://{endpoint}{options.ReadinessPath}");
            StatusLineAnswer answer;
            using (var request = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                request.CancelAfter(requestTimeout);
                try
                {
                    answer = await StatusLineProbe.GetAsync(endpoint, tls, options.ReadinessPath, options.ReadinessHost, request.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    return $"GET {uri} timed out after {requestTimeout.TotalSeconds:0.#} s";
                }
            }

            if (answer.NotHttp11)
            {
                // An endpoint that speaks only HTTP/2: with prior knowledge in cleartext, by ALPN over TLS.
                if (await http2.GetAsync(uri, cancellationToken).ConfigureAwait(false) is { } http2Failure)
                {
                    return $"GET {uri} in HTTP/1.1: {answer.Failure}; in HTTP/2: {http2Failure}";
                }

                continue;
            }

            if (answer.Failure is not null)
            {
                return $"GET {uri}: {answer.Failure}";
            }

            if (answer.Status >= 500)
            {
                return $"GET {uri} answered {answer.Status}";
            }
        }

        return null;
    }

    /// <summary>
    /// <see cref="HttpClient"/> for the endpoints that do not speak HTTP/1.1, created on first use. An app whose
    /// endpoints all speak HTTP/1.1 never loads System.Net.Http (why: <see cref="StatusLineProbe"/>), so no method
    /// here that always runs names one of its types: they are in <see cref="Http2Client"/>.
    /// </summary>
    private sealed class Http2Fallback(SwitchoverOptions options, TimeSpan timeout) : IDisposable
    {
        private IDisposable? _client;

        /// <summary>One HTTP/2 GET; null when it was answered below 500, otherwise why not.</summary>
        public Task<string?> GetAsync(Uri uri, CancellationToken cancellationToken)
        {
            _client ??= Http2Client.Create(options.ReadinessHost, timeout);
            return Http2Client.GetAsync(_client, uri, cancellationToken);
        }

        public void Dispose() => _client?.Dispose();
    }

    private static class Http2Client
    {
#pragma warning disable CA1859 // IDisposable on purpose: the caller must not name HttpClient (see Http2Fallback).
        public static IDisposable Create(string? serverName, TimeSpan timeout) => new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            PooledConnectionLifetime = TimeSpan.Zero,
            SslOptions =
            {
                // As in StatusLineProbe: our own private port on loopback, and nothing secret is sent.
#pragma warning disable CA5359
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
#pragma warning restore CA5359
                TargetHost = serverName,
            },
        })
        {
            Timeout = timeout,
        };
#pragma warning restore CA1859

        public static async Task<string?> GetAsync(IDisposable client, Uri uri, CancellationToken cancellationToken)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, uri)
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            try
            {
                using var response = await ((HttpClient)client).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                return (int)response.StatusCode >= 500 ? $"answered {(int)response.StatusCode}" : null;
            }
            catch (HttpRequestException e)
            {
                return $"failed: {e.Message}";
            }
            catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                return $"timed out: {e.Message}";
            }
        }
    }
}

/// <summary>The app's health checks, for <see cref="Readiness"/>, when it has any.</summary>
/// <remarks>
/// Asking the container for <see cref="HealthCheckService"/> loads its assembly (and its abstractions), about 0.25 MB
/// resident, in every app, also in the many that register no health checks. Only code that references the type can
/// register it, and running that code loaded the assembly: when it is not loaded once the host is built, the app has
/// none, and the container is not asked. The types are referenced only in methods of their own (never inlined), so that
/// compiling the readiness code does not load them either.
/// </remarks>
internal static class AppHealthChecks
{
    private const string AssemblyName = "Microsoft.Extensions.Diagnostics.HealthChecks";

    /// <summary>The app's registered health checks as a check that returns null when healthy; null when it registered none.</summary>
    public static Func<CancellationToken, Task<string?>>? Find(IServiceProvider services) =>
        AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name == AssemblyName) ? Resolve(services) : null;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Func<CancellationToken, Task<string?>>? Resolve(IServiceProvider services) =>
        services.GetService<HealthCheckService>() is { } service ? cancellationToken => FailingAsync(service, cancellationToken) : null;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<string?> FailingAsync(HealthCheckService service, CancellationToken cancellationToken)
    {
        var report = await service.CheckHealthAsync(cancellationToken).ConfigureAwait(false);
        if (report.Status == HealthStatus.Healthy)
        {
            return null;
        }

        var failing = report.Entries.Where(e => e.Value.Status != HealthStatus.Healthy)
            .Select(e => $"{e.Key}={e.Value.Status}{(e.Value.Description is { } d ? $" ({d})" : string.Empty)}");
        return $"health checks report {report.Status}: {string.Join(", ", failing)}";
    }
}
