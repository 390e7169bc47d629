using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// The options once validated. Invalid options do not throw from the options system (that would crash the process
/// with an unhandled exception and a core dump); instead the server does not start, every error is logged at once,
/// and the process exits with code 1.
/// </summary>
internal sealed class SwitchoverConfiguration
{
    private readonly Lazy<IReadOnlyList<string>> _errors;
    private readonly IServiceProvider _services;

    public SwitchoverConfiguration(IOptions<SwitchoverOptions> options, IHostEnvironment environment, IServiceProvider services)
    {
        Options = options.Value;
        _services = services;
        _errors = new Lazy<IReadOnlyList<string>>(() =>
        {
            var result = new SwitchoverOptionsValidator(environment).Validate(null, Options);
            List<string> errors = result.Failed ? [.. result.Failures] : [];
            if (Options.Mode == SwitchoverMode.Required && TransportError(services) is { } transport)
            {
                errors.Add(transport);
            }

            return errors;
        });
    }

    /// <summary>
    /// Kestrel binds with the transport registered last. One registered after UseSwitchover() (e.g. a later
    /// UseSockets(...) call) is not wrapped, and would bind the public ports directly.
    /// </summary>
    private static string? TransportError(IServiceProvider services) =>
        services.GetServices<IConnectionListenerFactory>().LastOrDefault() is { } last and not PrivateListenerFactory
            ? $"The transport {last.GetType().Name} was registered after UseSwitchover(), so it would bind the public ports directly. " +
              "Call UseSwitchover() after UseSockets(...) or any other transport registration."
            : null;

    public SwitchoverOptions Options { get; }

    /// <summary>
    /// How long Kestrel keeps an idle connection open (<c>Kestrel:Limits:KeepAliveTimeout</c>, or as set in code), as
    /// the server uses it; Kestrel's default when the server is not Kestrel.
    /// Resolved when asked, never in the constructor: Kestrel's options depend on this class (CertificateReload).
    /// </summary>
    public TimeSpan KeepAliveTimeout =>
        _services.GetService<IOptions<KestrelServerOptions>>()?.Value.Limits.KeepAliveTimeout ?? new KestrelServerLimits().KeepAliveTimeout;

    /// <summary>Set when Switchover raised the host's ShutdownTimeout to cover the drain (see <see cref="DrainShutdownTimeout"/>).</summary>
    public (TimeSpan From, TimeSpan To)? ShutdownTimeoutRaised { get; set; }

    /// <summary>The bound of this generation's drain: Switchover:Drain:MaxDuration, or its default for the policy and keep-alive timeout.</summary>
    public TimeSpan DrainBound => Options.Drain.Bound(KeepAliveTimeout);

    public IReadOnlyList<string> Errors => _errors.Value;

    /// <summary>Switchover runs: Required mode with valid options.</summary>
    public bool Enabled => Options.Mode == SwitchoverMode.Required && Errors.Count == 0;

    /// <summary>The server must not start at all: Required mode with invalid options.</summary>
    public bool Invalid => Options.Mode == SwitchoverMode.Required && Errors.Count > 0;
}
