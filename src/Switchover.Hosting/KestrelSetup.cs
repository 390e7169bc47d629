using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// Replaces the app's configured endpoints with one kernel-chosen private port per public endpoint, on all addresses
/// (dual stack: REDIRECT rewrites the destination to the primary address of the incoming interface, not to loopback).
/// </summary>
internal sealed class KestrelSetup(SwitchoverConfiguration switchover, IConfiguration configuration, LocalGeneration generation)
    : IPostConfigureOptions<KestrelServerOptions>
{
    public void PostConfigure(string? name, KestrelServerOptions kestrel)
    {
        if (!switchover.Enabled)
        {
            return;
        }

        var value = switchover.Options;

        // Endpoints from the Kestrel configuration section would bind the public ports directly: drop them.
        kestrel.Configure(new ConfigurationBuilder().Build(), reloadOnChange: false);
        var errors = new List<string>();
        foreach (var endpoint in PublicEndpointResolver.Resolve(value.PublicEndpoints, configuration, errors))
        {
            var protocols = ProtocolsFor(endpoint);
            kestrel.ListenAnyIP(0, listen =>
            {
                if (protocols is { } configured)
                {
                    listen.Protocols = configured;
                }

                generation.AddBinding(endpoint, listen);
                listen.Use(next => async connection =>
                {
                    generation.ConnectionOpened();
                    try
                    {
                        await next(connection).ConfigureAwait(false);
                    }
                    finally
                    {
                        generation.ConnectionClosed();
                    }
                });
            });
        }
    }

    /// <summary>
    /// The Kestrel configuration loader was replaced above, so carry over what it would have applied to the endpoint:
    /// its <c>Protocols</c>, or <c>Kestrel:EndpointDefaults:Protocols</c>.
    /// </summary>
    private HttpProtocols? ProtocolsFor(PublicEndpoint endpoint)
    {
        var errors = new List<string>();
        var own = configuration.GetSection("Kestrel:Endpoints").GetChildren()
            .FirstOrDefault(e => e["Url"] is { } url && PublicEndpointResolver.FromUrl(url, errors)?.Port == endpoint.Port)?["Protocols"];
        var text = own ?? configuration["Kestrel:EndpointDefaults:Protocols"];
        return Enum.TryParse<HttpProtocols>(text, ignoreCase: true, out var protocols) ? protocols : null;
    }
}
