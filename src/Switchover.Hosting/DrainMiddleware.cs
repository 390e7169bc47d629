using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;

namespace Switchover.Hosting;

/// <summary>
/// While draining, tells clients to reconnect (they reach the new generation) instead of letting them send a request
/// into a connection that is about to close: HTTP/1.x responses carry <c>Connection: close</c>, HTTP/2 gets GOAWAY.
/// </summary>
internal sealed class DrainStartupFilter(LocalGeneration generation) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        app.Use((context, nextMiddleware) =>
        {
            generation.RequestReceived();
            if (generation.Draining)
            {
                if (HttpProtocol.IsHttp11(context.Request.Protocol) || HttpProtocol.IsHttp10(context.Request.Protocol))
                {
                    context.Response.Headers.Connection = "close";
                }
                else
                {
                    context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
                }
            }

            return nextMiddleware(context);
        });
        next(app);
    };
}
