using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Switchover.Hosting;

namespace Switchover.Tests;

/// <summary>The endpoint plan as Kestrel's real socket transport binds it, on loopback, without root (Redirect: no IP_TRANSPARENT).</summary>
public sealed class PrivateListenerFactoryTests : IAsyncDisposable
{
    private readonly LocalGeneration _generation = new();
    private readonly List<IConnectionListener> _listeners = [];
    private readonly SocketTransportFactory _transport = new(Options.Create(new SocketTransportOptions()), NullLoggerFactory.Instance);

    public async ValueTask DisposeAsync()
    {
        foreach (var listener in _listeners)
        {
            await listener.DisposeAsync();
        }
    }

    private PrivateListenerFactory Factory(SwitchoverMode mode = SwitchoverMode.Required) =>
        new(_transport, Configuration(mode), _generation);

    private async Task<IConnectionListener> BindAsync(EndPoint endpoint, SwitchoverMode mode = SwitchoverMode.Required)
    {
        var listener = await Factory(mode).BindAsync(endpoint);
        _listeners.Add(listener);
        return listener;
    }

    [Theory(Timeout = 10000)]
    [InlineData("0.0.0.0", "0.0.0.0")]
    [InlineData("::", null)]
    [InlineData("127.0.0.1", "127.0.0.1")]
    [InlineData("::1", "::1")]
    public async Task An_address_and_port_is_bound_on_a_private_port_and_shown_to_kestrel_as_the_public_one(string address, string? recorded)
    {
        var listener = await BindAsync(new IPEndPoint(IPAddress.Parse(address), 8080));

        var mapping = Assert.Single(_generation.BoundPorts());
        Assert.Equal(8080, mapping.PublicPort);
        Assert.Equal(recorded, mapping.PublicAddress);
        Assert.NotEqual(8080, mapping.PrivatePort);
        Assert.Equal(new IPEndPoint(IPAddress.Parse(address), 8080), listener.EndPoint);
        Assert.Empty(_generation.RefusedEndpoints);
    }

    [Fact(Timeout = 10000)]
    public async Task Connections_to_the_private_port_are_accepted_and_counted_until_they_close()
    {
        var listener = await BindAsync(new IPEndPoint(IPAddress.IPv6Any, 8080));
        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, _generation.BoundPorts()[0].PrivatePort));

        await using var connection = await listener.AcceptAsync();
        Assert.NotNull(connection);
        Assert.Equal(1, _generation.OpenConnections);

        connection.Abort();
        await WaitUntilAsync(() => _generation.OpenConnections == 0);
    }

    [Fact(Timeout = 10000)]
    public async Task A_public_port_zero_is_refused_with_the_reason_and_binds_nothing()
    {
        var listener = await BindAsync(new IPEndPoint(IPAddress.Any, 0));

        Assert.IsType<RefusedListener>(listener);
        Assert.Contains("needs a fixed port", Assert.Single(_generation.RefusedEndpoints), StringComparison.Ordinal);
        Assert.Empty(_generation.BoundPorts());
    }

    [Fact(Timeout = 10000)]
    public async Task An_inherited_file_handle_is_refused_with_what_to_do_instead()
    {
        await BindAsync(new FileHandleEndPoint(3, FileHandleType.Tcp));

        Assert.Contains("--urls http://*:8080", Assert.Single(_generation.RefusedEndpoints), StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task A_unix_socket_is_bound_as_configured_and_left_alone()
    {
        var path = Path.Combine(Path.GetTempPath(), $"switchover-test-{Guid.NewGuid():N}.sock");
        try
        {
            var listener = await BindAsync(new UnixDomainSocketEndPoint(path));

            Assert.True(File.Exists(path));
            Assert.Equal(path, listener.EndPoint.ToString());
            Assert.Empty(_generation.BoundPorts());
            Assert.Single(_generation.EndpointsLeftAlone);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact(Timeout = 10000)]
    public async Task An_address_this_host_does_not_have_fails_as_kestrel_would()
    {
        var error = await Assert.ThrowsAsync<IOException>(() => BindAsync(new IPEndPoint(IPAddress.Parse("192.0.2.77"), 8080)));

        Assert.Contains("not an address of this host", error.Message, StringComparison.Ordinal);
        Assert.Empty(_generation.BoundPorts());
    }

    [Fact(Timeout = 10000)]
    public async Task Disabled_binds_the_endpoint_exactly_as_configured()
    {
        using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        probe.Dispose();

        var listener = await BindAsync(new IPEndPoint(IPAddress.Loopback, port), SwitchoverMode.Disabled);

        Assert.Equal(port, ((IPEndPoint)listener.EndPoint).Port);
        Assert.Empty(_generation.BoundPorts());
    }

    private static SwitchoverConfiguration Configuration(SwitchoverMode mode) =>
        new(Options.Create(new SwitchoverOptions { Mode = mode, Namespace = "t", Steering = Steering.Redirect }), new Environment(),
            new ServiceCollection().BuildServiceProvider());

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var i = 0; i < 100 && !condition(); i++)
        {
            await Task.Delay(50);
        }

        Assert.True(condition(), "The condition did not hold within 5 s.");
    }

    private sealed class Environment : IHostEnvironment
    {
        public string EnvironmentName { get; set; } = "Test";

        public string ApplicationName { get; set; } = "Test";

        public string ContentRootPath { get; set; } = "/";

        public IFileProvider ContentRootFileProvider { get; set; } = new NullFileProvider();
    }
}
