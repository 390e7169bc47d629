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
            kestrel.ListenAnyIP(0, listen =>
            {
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
}
