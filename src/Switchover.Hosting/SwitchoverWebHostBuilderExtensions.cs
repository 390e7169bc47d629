using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Switchover.Hosting;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>Adds Switchover to a web host.</summary>
public static class SwitchoverWebHostBuilderExtensions
{
    /// <summary>
    /// Hands the app's public ports from the running generation to this one once it is ready, and drains this one
    /// when a newer one takes over. Reads the <c>Switchover</c> configuration section.
    /// </summary>
    public static IWebHostBuilder UseSwitchover(this IWebHostBuilder builder) => builder.UseSwitchover(_ => { });

    /// <summary>As <see cref="UseSwitchover(IWebHostBuilder)"/>, with options set in code after configuration.</summary>
    public static IWebHostBuilder UseSwitchover(this IWebHostBuilder builder, Action<SwitchoverOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        return builder.ConfigureServices((context, services) =>
        {
            // Validated by SwitchoverConfiguration, not ValidateOnStart: see there why.
            services.AddOptions<SwitchoverOptions>()
                .Bind(context.Configuration.GetSection("Switchover"))
                .Configure(configure);
            services.TryAddSingleton<SwitchoverConfiguration>();
            services.TryAddSingleton<LocalGeneration>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<KestrelServerOptions>, KestrelSetup>());
            services.TryAddEnumerable(ServiceDescriptor.Transient<IStartupFilter, DrainStartupFilter>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, HandoffService>());
            DecorateServer(services);
        });
    }

    private static void DecorateServer(IServiceCollection services)
    {
        var descriptor = services.LastOrDefault(d => d.ServiceType == typeof(IServer));
        if (descriptor is null || descriptor.ImplementationType == typeof(SwitchoverServer))
        {
            return;
        }

        services.Remove(descriptor);
        Func<IServiceProvider, IServer> inner = descriptor switch
        {
            { ImplementationInstance: IServer instance } => _ => instance,
            { ImplementationFactory: { } factory } => sp => (IServer)factory(sp),
            { ImplementationType: { } type } => RegisterInner(services, type),
            _ => throw new InvalidOperationException("Unsupported IServer registration."),
        };
        services.AddSingleton<IServer>(sp => new SwitchoverServer(inner(sp), sp.GetRequiredService<SwitchoverConfiguration>()));
    }

    private static Func<IServiceProvider, IServer> RegisterInner(IServiceCollection services, Type type)
    {
        services.TryAdd(ServiceDescriptor.Singleton(type, type));
        return sp => (IServer)sp.GetRequiredService(type);
    }
}
