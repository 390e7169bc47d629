using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Switchover.Hosting;

/// <summary>
/// Wraps the server so that the hosting URLs (which name public ports) are not bound: Kestrel binds only the
/// private ports Switchover configured, and does not warn about overriding the URLs.
/// </summary>
internal sealed class SwitchoverServer(IServer inner, SwitchoverConfiguration configuration) : IServer
{
    public IFeatureCollection Features => inner.Features;

    public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
        where TContext : notnull
    {
        if (configuration.Options.Mode == SwitchoverMode.Required && Features.Get<IServerAddressesFeature>() is { Addresses.IsReadOnly: false } addresses)
        {
            addresses.Addresses.Clear();
            addresses.PreferHostingUrls = false;
        }

        // With invalid options HandoffService reports the errors and stops the host; bind nothing meanwhile.
        return configuration.Invalid ? Task.CompletedTask : inner.StartAsync(application, cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) =>
        configuration.Invalid ? Task.CompletedTask : inner.StopAsync(cancellationToken);

    public void Dispose() => inner.Dispose();
}
