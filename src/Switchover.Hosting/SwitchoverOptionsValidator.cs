using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>Validates the options at start, reporting every error at once.</summary>
/// <param name="keepAliveTimeout">Kestrel's configured keep-alive timeout; null: Kestrel's default (130 s).</param>
internal sealed class SwitchoverOptionsValidator(IHostEnvironment environment, TimeSpan? keepAliveTimeout = null) : IValidateOptions<SwitchoverOptions>
{
    private static readonly TimeSpan DefaultKeepAliveTimeout = new KestrelServerLimits().KeepAliveTimeout;

    public ValidateOptionsResult Validate(string? name, SwitchoverOptions options)
    {
        if (options.Mode == SwitchoverMode.Disabled)
        {
            return ValidateOptionsResult.Success;
        }

        var errors = new List<string>();
        if (!OperatingSystem.IsLinux())
        {
            errors.Add("Switchover:Mode=Required needs Linux with nftables. Set Switchover:Mode=Disabled on other systems.");
        }

        if (options.Namespace is not null && NamespaceName.Validate(options.Namespace) is { } namespaceError)
        {
            errors.Add(namespaceError);
        }

        if (options.Namespace is null && environment.ApplicationName is null or "")
        {
            errors.Add("No Switchover namespace: set Switchover:Namespace.");
        }

        if (!Path.IsPathFullyQualified(options.StateDirectory))
        {
            errors.Add($"Switchover:StateDirectory '{options.StateDirectory}' must be an absolute path (default /run/switchover).");
        }

        if (!options.ReadinessPath.StartsWith('/'))
        {
            errors.Add($"Switchover:ReadinessPath '{options.ReadinessPath}' must start with '/'.");
        }

        Positive(errors, "Switchover:ReadinessTimeout", options.ReadinessTimeout);
        Positive(errors, "Switchover:LockTimeout", options.LockTimeout);
        ValidateDrain(errors, options.Drain, keepAliveTimeout ?? DefaultKeepAliveTimeout);
        if (!Enum.IsDefined(options.Steering))
        {
            errors.Add($"Switchover:Steering '{options.Steering}' is unknown; use Tproxy (default) or Redirect.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void ValidateDrain(List<string> errors, DrainOptions drain, TimeSpan keepAlive)
    {
        Positive(errors, "Switchover:Drain:QuietPeriod", drain.QuietPeriod);
        Positive(errors, "Switchover:Drain:PollInterval", drain.PollInterval);
        if (!Enum.IsDefined(drain.IdleConnections))
        {
            errors.Add($"Switchover:Drain:IdleConnections '{drain.IdleConnections}' is unknown; use WaitForClient (default) or CloseAfterQuiet.");
            return;
        }

        if (drain.MaxDuration is { } max)
        {
            Positive(errors, "Switchover:Drain:MaxDuration", max);
            if (drain.QuietPeriod > max)
            {
                errors.Add($"Switchover:Drain:QuietPeriod ({drain.QuietPeriod}) is longer than Switchover:Drain:MaxDuration ({max}).");
            }
        }

        if (drain.IdleConnections != IdleConnectionPolicy.WaitForClient)
        {
            return;
        }

        var infinite = keepAlive == Timeout.InfiniteTimeSpan || keepAlive == TimeSpan.MaxValue;
        if (infinite && drain.MaxDuration is null)
        {
            errors.Add("Kestrel's keep-alive timeout (Kestrel:Limits:KeepAliveTimeout) is infinite, so Switchover:Drain:IdleConnections=WaitForClient " +
                       "would keep a superseded generation alive for as long as any client keeps a connection idle. Set Switchover:Drain:MaxDuration " +
                       "(idle connections still open then are closed), give Kestrel a finite keep-alive timeout, or set IdleConnections=CloseAfterQuiet.");
        }
        else if (!infinite && drain.MaxDuration is { } bound && bound < keepAlive + drain.QuietPeriod)
        {
            errors.Add($"Switchover:Drain:MaxDuration ({bound}) is shorter than Kestrel's keep-alive timeout ({keepAlive}) plus Switchover:Drain:QuietPeriod " +
                       $"({drain.QuietPeriod}), so IdleConnections=WaitForClient would close connections a client may still reuse. Raise MaxDuration to at " +
                       $"least {keepAlive + drain.QuietPeriod} (or remove it: the default is the keep-alive timeout plus {DrainOptions.KeepAliveMargin.TotalSeconds:0} s), " +
                       "lower Kestrel:Limits:KeepAliveTimeout, or set Switchover:Drain:IdleConnections=CloseAfterQuiet.");
        }
    }

    private static void Positive(List<string> errors, string key, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{key} must be positive, not {value}.");
        }
    }
}
