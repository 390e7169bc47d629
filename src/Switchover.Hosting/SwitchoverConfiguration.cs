using Microsoft.Extensions.Configuration;
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

    public SwitchoverConfiguration(IOptions<SwitchoverOptions> options, IConfiguration configuration, IHostEnvironment environment)
    {
        Options = options.Value;
        _errors = new Lazy<IReadOnlyList<string>>(() =>
        {
            var result = new SwitchoverOptionsValidator(configuration, environment).Validate(null, Options);
            return result.Failed ? [.. result.Failures] : [];
        });
    }

    public SwitchoverOptions Options { get; }

    public IReadOnlyList<string> Errors => _errors.Value;

    /// <summary>Switchover runs: Required mode with valid options.</summary>
    public bool Enabled => Options.Mode == SwitchoverMode.Required && Errors.Count == 0;

    /// <summary>The server must not start at all: Required mode with invalid options.</summary>
    public bool Invalid => Options.Mode == SwitchoverMode.Required && Errors.Count > 0;
}
