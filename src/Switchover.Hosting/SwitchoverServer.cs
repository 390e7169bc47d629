using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http.Features;

namespace Switchover.Hosting;

/// <summary>
/// Wraps the server so that, with invalid Switchover options, nothing is bound at all (HandoffService reports the
/// errors and stops the host). The endpoints themselves are moved to private ports one level down, in the transport
/// (<see cref="PrivateListenerFactory"/>), so Kestrel resolves the app's URLs and endpoints as it always does.
/// A failure to bind a private port (no privilege for IP_TRANSPARENT, an address this host does not have) is recorded
/// rather than thrown: thrown, it would escape app.Run() and abort the process; recorded, the generation exits 1 with
/// the reason before it registers, like any other start failure.
/// </summary>
internal sealed class SwitchoverServer(IServer inner, SwitchoverConfiguration configuration, LocalGeneration generation) : IServer
{
    public IFeatureCollection Features => inner.Features;

    public async Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
        where TContext : notnull
    {
        if (configuration.Invalid)
        {
            return;
        }

        if (!configuration.Enabled)
        {
            await inner.StartAsync(application, cancellationToken).ConfigureAwait(false);
            return;
        }

        try
        {
            await inner.StartAsync(application, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            generation.BindFailed(e is ArgumentOutOfRangeException { ParamName: "port" }
                ? "An endpoint's port is out of range: use a port in 1-65535 in --urls, ASPNETCORE_URLS, HTTP_PORTS or Kestrel:Endpoints."
                : $"Kestrel could not bind the configured endpoints: {e.Message}");
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await inner.StopAsync(stop.Token).ConfigureAwait(false);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) =>
        configuration.Invalid ? Task.CompletedTask : inner.StopAsync(cancellationToken);

    public void Dispose() => inner.Dispose();
}
