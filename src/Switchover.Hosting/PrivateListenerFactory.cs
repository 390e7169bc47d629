using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Wraps Kestrel's transport so that every TCP endpoint the app is configured with, in whatever form (URLs, HTTP_PORTS,
/// <c>Kestrel:Endpoints</c>, <c>Listen*()</c> in code, with TLS and connection middleware as configured: those live
/// in Kestrel's connection pipeline, above the transport), is bound on a private port the kernel picks instead of the
/// public one. This is the one place where the app's endpoints become the generation's plan: Kestrel calls it once per
/// endpoint it binds, and nothing else resolves endpoints.
/// Endpoints that are not a TCP address (Unix sockets) are left to the transport as they are. Endpoints that cannot be
/// handed from one generation to the next (an inherited file handle, a public port 0) are refused with the reason,
/// and the generation exits before it registers.
/// </summary>
internal sealed class PrivateListenerFactory(IConnectionListenerFactory inner, SwitchoverConfiguration configuration, LocalGeneration generation)
    : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    public bool CanBind(EndPoint endpoint) => inner is not IConnectionListenerFactorySelector selector || selector.CanBind(endpoint);

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (!configuration.Enabled)
        {
            return await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }

        switch (endpoint)
        {
            case IPEndPoint { Port: 0 } ip:
                return generation.Refuse(endpoint,
                    $"Endpoint {ip} asks the kernel for a port (0). A public endpoint needs a fixed port that clients know; Switchover chooses the private ports itself.");
            case IPEndPoint ip:
                EnsureLocal(ip.Address);
                var listener = await BindPrivateAsync(cancellationToken).ConfigureAwait(false);
                var privatePort = ((IPEndPoint)listener.EndPoint).Port;
                var mapping = new PortMapping(ip.Port, privatePort, PublicAddressOf(ip.Address));
                generation.AddBinding(mapping);
                return new PrivateListener(listener, ip, generation);
            case FileHandleEndPoint handle:
                return generation.Refuse(endpoint,
                    $"Endpoint from file handle {handle.FileHandle} (ListenHandle, or systemd socket activation) is a socket this process inherited; " +
                    "it cannot be moved to a private port. Configure the endpoint by address and port (e.g. --urls http://*:8080), or set Switchover:Mode=Disabled.");
            default:
                // A Unix socket or another transport's endpoint: not a public port; bound as configured.
                generation.LeaveAlone(endpoint);
                return await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// "Every address" of both families is recorded as null, IPv4's as 0.0.0.0 (as Kestrel binds it: IPv4 only), any
    /// other address as itself.
    /// </summary>
    internal static string? PublicAddressOf(IPAddress address) =>
        address.Equals(IPAddress.IPv6Any) ? null
        : address.IsIPv4MappedToIPv6 ? address.MapToIPv4().ToString()
        : address.ToString();

    /// <summary>
    /// The kernel would refuse to bind an address this host does not have; so does Switchover, although it binds the
    /// private port on every address, so that a typo fails at start as it would without Switchover.
    /// </summary>
    private static void EnsureLocal(IPAddress address)
    {
        if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any))
        {
            return;
        }

        using var probe = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            probe.Bind(new IPEndPoint(address, 0));
        }
        catch (SocketException e)
        {
            throw new IOException(
                $"Failed to bind to address {address}: {e.Message}. It is not an address of this host; Switchover steers only local addresses.", e);
        }
    }

    /// <summary>A private listener on every address, both families where the host has IPv6, on a port the kernel picks.</summary>
    private async Task<IConnectionListener> BindPrivateAsync(CancellationToken cancellationToken)
    {
        if (Socket.OSSupportsIPv6)
        {
            try
            {
                return await inner.BindAsync(new IPEndPoint(IPAddress.IPv6Any, 0), cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressFamilyNotSupported or SocketError.AddressNotAvailable)
            {
                // IPv6 is disabled on this host (e.g. ipv6.disable=1): IPv4 alone.
            }
        }

        return await inner.BindAsync(new IPEndPoint(IPAddress.Any, 0), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The transport's listener on the private port, shown to Kestrel as the public endpoint it asked for (so its logs
    /// and IServerAddressesFeature name the port clients use), counting the connections it hands out and giving each a <see cref="ConnectionActivity"/> feature, which the drain
    /// middleware finds on every request of the connection.
    /// </summary>
    private sealed class PrivateListener(IConnectionListener inner, IPEndPoint publicEndPoint, LocalGeneration generation) : IConnectionListener
    {
        public EndPoint EndPoint => publicEndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            var connection = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            if (connection is not null)
            {
                var activity = generation.ConnectionOpened();
                connection.Features.Set(activity);
                connection.ConnectionClosed.Register(() => generation.ConnectionClosed(activity));
            }

            return connection;
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => inner.UnbindAsync(cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}

/// <summary>
/// Stands in for an endpoint that was refused: nothing is bound, nothing is accepted, and the generation exits at
/// start with the reasons of every refused endpoint at once.
/// </summary>
internal sealed class RefusedListener(EndPoint endpoint) : IConnectionListener
{
    private readonly TaskCompletionSource _unbound = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public EndPoint EndPoint => endpoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        await _unbound.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        _unbound.TrySetResult();
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync() => UnbindAsync();
}
