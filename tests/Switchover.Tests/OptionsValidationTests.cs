using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Hosting;
using Switchover.Hosting;

namespace Switchover.Tests;

public sealed class OptionsValidationTests
{
    private static SwitchoverOptionsValidator Validator() => new(new Environment());

    [Fact]
    public void Every_error_is_reported_at_once()
    {
        var options = new SwitchoverOptions
        {
            Mode = SwitchoverMode.Required, Namespace = "x\"; flush ruleset", StateDirectory = "relative", ReadinessTimeout = TimeSpan.Zero,
            Steering = (Steering)7,
        };
        var result = Validator().Validate(null, options);

        Assert.True(result.Failed);
        var failures = result.Failures!.ToList();
        Assert.Contains(failures, f => f.Contains("[a-z0-9_-]", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("absolute path", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("ReadinessTimeout", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("Switchover:Steering '7' is unknown", StringComparison.Ordinal));
    }

    [Fact]
    public void The_default_drain_options_are_valid_with_kestrels_default_keep_alive_timeout()
    {
        var options = new SwitchoverOptions { Mode = SwitchoverMode.Required };

        Assert.Equal(IdleConnectionPolicy.WaitForClient, options.Drain.IdleConnections);
        Assert.True(Validator().Validate(null, options).Succeeded);
    }

    [Fact]
    public void An_unknown_idle_connection_policy_and_bad_drain_durations_are_reported_together()
    {
        var options = new SwitchoverOptions { Mode = SwitchoverMode.Required };
        options.Drain.IdleConnections = (IdleConnectionPolicy)9;
        options.Drain.PollInterval = TimeSpan.Zero;

        var failures = Validator().Validate(null, options).Failures!.ToList();

        Assert.Contains(failures, f => f.Contains("Switchover:Drain:IdleConnections '9' is unknown; use WaitForClient (default) or CloseAfterQuiet", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("Switchover:Drain:PollInterval must be positive", StringComparison.Ordinal));
    }

    [Fact]
    public void Disabled_mode_validates_nothing() =>
        Assert.True(Validator().Validate(null, new SwitchoverOptions { Mode = SwitchoverMode.Disabled, Namespace = "BAD" }).Succeeded);

    private sealed class Environment : IHostEnvironment
    {
        public string EnvironmentName { get; set; } = "Test";

        public string ApplicationName { get; set; } = "Test";

        public string ContentRootPath { get; set; } = "/";

        public IFileProvider ContentRootFileProvider { get; set; } = new NullFileProvider();
    }
}
