using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// With TPROXY steering, the kernel hands a SYN for the public port only to a listener that carries IP_TRANSPARENT
/// (nft_tproxy skips others). Every TCP listener the socket transport creates while Switchover runs is a private
/// listener (<see cref="PrivateListenerFactory"/> rewrote its endpoint), so the flag is set on each, on top of whatever
/// socket the app's own <c>CreateBoundListenSocket</c> makes (through the agent, for an app without privileges).
/// </summary>
internal sealed class TransparentSockets(SwitchoverConfiguration configuration, HandoffBackends backends) : IPostConfigureOptions<SocketTransportOptions>
{
    // <linux/in.h> SOL_IP/IP_TRANSPARENT and <linux/in6.h> SOL_IPV6/IPV6_TRANSPARENT; both set the one flag the TPROXY
    // lookup reads. Raw options: .NET's SocketOptionName has no such names and refuses unknown ones (ENOTSUP).
    private const int SolIp = 0;
    private const int IpTransparent = 19;
    private const int SolIpv6 = 41;
    private const int Ipv6Transparent = 75;

    public void PostConfigure(string? name, SocketTransportOptions options)
    {
        // Whether Switchover runs is decided when the first socket is made, not here: the options are built while the
        // transport is constructed, which the configuration's own check of the transports is part of.
        var create = options.CreateBoundListenSocket;
        options.CreateBoundListenSocket = endpoint =>
        {
            var socket = create(endpoint);
            if (endpoint is IPEndPoint && configuration.Enabled && configuration.Options.Steering == Steering.Tproxy)
            {
                // Without CAP_NET_ADMIN the agent sets the flag, on this very socket sent to it.
                backends.MakeTransparent(socket);
            }

            return socket;
        };
    }

    internal static void MakeTransparent(Socket socket)
    {
        try
        {
            ReadOnlySpan<byte> on = [1, 0, 0, 0];
            if (socket.AddressFamily == AddressFamily.InterNetworkV6)
            {
                socket.SetRawSocketOption(SolIpv6, Ipv6Transparent, on);
            }
            else
            {
                socket.SetRawSocketOption(SolIp, IpTransparent, on);
            }
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new IOException(
                $"Could not mark the private listener IP_TRANSPARENT ({e.Message}), which TPROXY steering needs. " +
                "Run as root or grant CAP_NET_ADMIN (e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit), " +
                "or set Switchover:Steering=Redirect.", e);
        }
    }
}
