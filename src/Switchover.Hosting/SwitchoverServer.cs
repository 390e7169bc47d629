using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// Wraps the server so that the hosting URLs (which name public ports) are not bound: Kestrel binds only the
/// private ports Switchover configured, and does not warn about overriding the URLs.
/// </summary>
internal sealed class SwitchoverServer(IServer inner, IOptions<SwitchoverOptions> options) : IServer
{
    public IFeatureCollection Features => inner.Features;

    public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
        where TContext : notnull
    {
        if (options.Value.Mode == SwitchoverMode.Required && Features.Get<IServerAddressesFeature>() is { Addresses.IsReadOnly: false } addresses)
        {
            addresses.Addresses.Clear();
            addresses.PreferHostingUrls = false;
        }

        return inner.StartAsync(application, cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => inner.StopAsync(cancellationToken);

    public void Dispose() => inner.Dispose();
}
