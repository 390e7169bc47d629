using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
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
            services.TryAddSingleton<HandoffBackends>();
            services.TryAddSingleton<SystemdNotifications>();
            services.TryAddSingleton<RecentLog>();
            services.TryAddSingleton<DeployOutcome>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoggerProvider, RecentLogProvider>(sp => new RecentLogProvider(sp.GetRequiredService<RecentLog>())));
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<SocketTransportOptions>, TransparentSockets>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<KestrelServerOptions>, CertificateReload>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<HostOptions>, DrainShutdownTimeout>());
            services.TryAddEnumerable(ServiceDescriptor.Transient<IStartupFilter, DrainStartupFilter>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, HandoffService>());
            DecorateServer(services);
            DecorateTransports(services);
        });
    }

    /// <summary>
    /// Every registered transport is wrapped, so that whichever Kestrel picks for an endpoint binds it on a private
    /// port. A transport registered after UseSwitchover() is not wrapped: HandoffService refuses to start then.
    /// </summary>
    private static void DecorateTransports(IServiceCollection services)
    {
        for (var i = 0; i < services.Count; i++)
        {
            var descriptor = services[i];
            if (descriptor.ServiceType != typeof(IConnectionListenerFactory) || descriptor.IsKeyedService
                || descriptor.ImplementationType == typeof(PrivateListenerFactory))
            {
                continue;
            }

            var inner = Resolver<IConnectionListenerFactory>(services, descriptor);
            services[i] = ServiceDescriptor.Singleton<IConnectionListenerFactory>(sp =>
                new PrivateListenerFactory(inner(sp), sp.GetRequiredService<SwitchoverConfiguration>(), sp.GetRequiredService<LocalGeneration>()));
        }
    }

    private static void DecorateServer(IServiceCollection services)
    {
        var descriptor = services.LastOrDefault(d => d.ServiceType == typeof(IServer));
        if (descriptor is null || descriptor.ImplementationType == typeof(SwitchoverServer))
        {
            return;
        }

        services.Remove(descriptor);
        var inner = Resolver<IServer>(services, descriptor);
        services.AddSingleton<IServer>(sp => new SwitchoverServer(inner(sp), sp.GetRequiredService<SwitchoverConfiguration>(), sp.GetRequiredService<LocalGeneration>()));
    }

    /// <summary>How to get the service a registration stood for, once the registration itself is replaced by a decorator.</summary>
    private static Func<IServiceProvider, T> Resolver<T>(IServiceCollection services, ServiceDescriptor descriptor) => descriptor switch
    {
        { ImplementationInstance: T instance } => _ => instance,
        { ImplementationFactory: { } factory } => sp => (T)factory(sp),
        { ImplementationType: { } type } => RegisterInner<T>(services, type),
        _ => throw new InvalidOperationException($"Unsupported {typeof(T).Name} registration."),
    };

    private static Func<IServiceProvider, T> RegisterInner<T>(IServiceCollection services, Type type)
    {
        services.TryAdd(ServiceDescriptor.Singleton(type, type));
        return sp => (T)sp.GetRequiredService(type);
    }
}
