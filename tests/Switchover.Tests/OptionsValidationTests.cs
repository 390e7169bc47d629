using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Hosting;
using Switchover.Hosting;

namespace Switchover.Tests;

public sealed class OptionsValidationTests
{
    private static SwitchoverOptionsValidator Validator(params (string Key, string Value)[] settings) =>
        new(new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value))).Build(),
            new Environment());

    [Fact]
    public void Every_error_is_reported_at_once()
    {
        var options = new SwitchoverOptions { Mode = SwitchoverMode.Required, Namespace = "x\"; flush ruleset", StateDirectory = "relative", ReadinessTimeout = TimeSpan.Zero };
        var result = Validator(("urls", "http://0.0.0.0:70000;https://0.0.0.0:8443")).Validate(null, options);

        Assert.True(result.Failed);
        var failures = result.Failures!.ToList();
        Assert.Contains(failures, f => f.Contains("[a-z0-9_-]", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("absolute path", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("ReadinessTimeout", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("'70000' is out of range", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.Contains("HTTPS", StringComparison.Ordinal));
    }

    [Fact]
    public void Disabled_mode_validates_nothing() =>
        Assert.True(Validator().Validate(null, new SwitchoverOptions { Mode = SwitchoverMode.Disabled, Namespace = "BAD" }).Succeeded);

    [Theory]
    [InlineData("http://0.0.0.0:8080", 8080)]
    [InlineData("http://*:81", 81)]
    [InlineData("http://+:82/base", 82)]
    [InlineData("http://[::]:83", 83)]
    [InlineData("http://localhost", 80)]
    public void Urls_become_public_endpoints(string url, int port)
    {
        var errors = new List<string>();
        Assert.Equal(port, PublicEndpointResolver.FromUrl(url, errors)!.Port);
        Assert.Empty(errors);
    }

    [Fact]
    public void Kestrel_endpoints_win_over_urls_and_explicit_endpoints_win_over_both()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["urls"] = "http://0.0.0.0:8080",
            ["Kestrel:Endpoints:Web:Url"] = "http://0.0.0.0:9090",
        }).Build();
        var errors = new List<string>();

        Assert.Equal([9090], PublicEndpointResolver.Resolve([], configuration, errors).Select(e => e.Port));
        Assert.Equal([7070], PublicEndpointResolver.Resolve(["tcp/7070"], configuration, errors).Select(e => e.Port));
        Assert.Equal([PublicEndpointResolver.KestrelDefaultPort], PublicEndpointResolver.Resolve([], new ConfigurationBuilder().Build(), errors).Select(e => e.Port));
        Assert.Empty(errors);
    }

    private sealed class Environment : IHostEnvironment
    {
        public string EnvironmentName { get; set; } = "Test";

        public string ApplicationName { get; set; } = "Test";

        public string ContentRootPath { get; set; } = "/";

        public IFileProvider ContentRootFileProvider { get; set; } = new NullFileProvider();
    }
}
