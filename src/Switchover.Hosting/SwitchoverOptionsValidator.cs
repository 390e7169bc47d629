using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// Validates the options at start, reporting every error at once. How the drain's bound relates to Kestrel's keep-alive
/// timeout is not checked here: Kestrel's options are not built yet (and building them asks whether Switchover is
/// enabled, i.e. this validation); <see cref="DrainPlan.BoundWarning"/> checks it once they are, and the bound wins.
/// </summary>
internal sealed class SwitchoverOptionsValidator(IHostEnvironment environment) : IValidateOptions<SwitchoverOptions>
{
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

        if (options.Agent is not (HandoffBackends.Auto or HandoffBackends.Off) && !Path.IsPathFullyQualified(options.Agent ?? string.Empty))
        {
            errors.Add($"Switchover:Agent '{options.Agent}' must be auto (default), off, or the absolute path of the agent's socket.");
        }

        Positive(errors, "Switchover:AgentReconnectTimeout", options.AgentReconnectTimeout);
        Positive(errors, "Switchover:ReadinessTimeout", options.ReadinessTimeout);
        Positive(errors, "Switchover:LockTimeout", options.LockTimeout);
        ValidateDrain(errors, options.Drain);
        if (options.RollbackWindow < TimeSpan.Zero)
        {
            errors.Add($"Switchover:RollbackWindow must be zero (off) or positive, not {options.RollbackWindow}.");
        }

        if (!Enum.IsDefined(options.Steering))
        {
            errors.Add($"Switchover:Steering '{options.Steering}' is unknown; use Tproxy (default) or Redirect.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void ValidateDrain(List<string> errors, DrainOptions drain)
    {
        Positive(errors, "Switchover:Drain:QuietPeriod", drain.QuietPeriod);
        Positive(errors, "Switchover:Drain:PollInterval", drain.PollInterval);
        if (!Enum.IsDefined(drain.IdleConnections))
        {
            errors.Add($"Switchover:Drain:IdleConnections '{drain.IdleConnections}' is unknown; use WaitForClient (default) or CloseAfterQuiet.");
        }

        if (drain.MaxDuration is { } max)
        {
            Positive(errors, "Switchover:Drain:MaxDuration", max);
            if (drain.QuietPeriod > max)
            {
                errors.Add($"Switchover:Drain:QuietPeriod ({drain.QuietPeriod}) is longer than Switchover:Drain:MaxDuration ({max}).");
            }
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
