using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>Validates the options at start, reporting every error at once.</summary>
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
        Positive(errors, "Switchover:Drain:QuietPeriod", options.Drain.QuietPeriod);
        Positive(errors, "Switchover:Drain:MaxDuration", options.Drain.MaxDuration);
        Positive(errors, "Switchover:Drain:PollInterval", options.Drain.PollInterval);
        if (options.RollbackWindow < TimeSpan.Zero)
        {
            errors.Add($"Switchover:RollbackWindow must be zero (off) or positive, not {options.RollbackWindow}.");
        }

        if (options.Drain.QuietPeriod > options.Drain.MaxDuration)
        {
            errors.Add($"Switchover:Drain:QuietPeriod ({options.Drain.QuietPeriod}) is longer than Switchover:Drain:MaxDuration ({options.Drain.MaxDuration}).");
        }

        if (!Enum.IsDefined(options.Steering))
        {
            errors.Add($"Switchover:Steering '{options.Steering}' is unknown; use Tproxy (default) or Redirect.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void Positive(List<string> errors, string key, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{key} must be positive, not {value}.");
        }
    }
}
