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

    public async Task WaitAsync(IReadOnlyList<PortMapping> ports, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.ReadinessTimeout);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false, PooledConnectionLifetime = TimeSpan.Zero })
        {
            Timeout = TimeSpan.FromSeconds(5),
        };
        var reason = "not checked yet";
        try
        {
            while (true)
            {
                reason = await CheckOnceAsync(http, ports, timeout.Token).ConfigureAwait(false);
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

    private async Task<string?> CheckOnceAsync(HttpClient http, IReadOnlyList<PortMapping> ports, CancellationToken cancellationToken)
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

            var uri = new Uri($"http://{IPAddress.Loopback}:{port.PrivatePort}{options.ReadinessPath}");
            try
            {
                using var response = await http.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                if ((int)response.StatusCode >= 500)
                {
                    return $"GET {uri} answered {(int)response.StatusCode}";
                }
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

        return null;
    }
}
