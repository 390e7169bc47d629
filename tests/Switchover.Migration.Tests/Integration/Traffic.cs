using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Integration;

/// <summary>Bounded traffic between two namespaces over real sockets: every call has a deadline.</summary>
internal static class Traffic
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Sends <paramref name="bytes"/> bytes over one TCP connection from <paramref name="client"/> to a listener at
    /// <paramref name="server"/>:<paramref name="address"/>, which sends them back. Returns the address the server saw.
    /// </summary>
    public static async Task<IPAddress> TcpEchoAsync(NetworkNamespace server, IPAddress address, NetworkNamespace client, int bytes)
    {
        using var timeout = new CancellationTokenSource(Deadline);
        using var listener = server.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(address, 0));
        listener.Listen();
        var serving = ServeEchoAsync(listener, timeout.Token);

        using var socket = client.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(listener.LocalEndPoint!, timeout.Token);
        var data = RandomNumberGenerator.GetBytes(bytes);
        var sending = SendAllAsync(socket, data, timeout.Token);
        var echoed = new byte[bytes];
        var received = 0;
        while (received < bytes)
        {
            var n = await socket.ReceiveAsync(echoed.AsMemory(received), SocketFlags.None, timeout.Token);
            Assert.True(n > 0, $"the echo from {address} ended after {received} of {bytes} bytes");
            received += n;
        }

        await sending;
        Assert.True(data.AsSpan().SequenceEqual(echoed), $"the echo from {address} differs from what was sent");
        return await serving;

        static async Task SendAllAsync(Socket socket, byte[] data, CancellationToken cancellationToken)
        {
            await socket.SendAsync(data, SocketFlags.None, cancellationToken);
            socket.Shutdown(SocketShutdown.Send);
        }
    }

    /// <summary>
    /// Streams <paramref name="bytes"/> random bytes one way over TCP and checks their SHA-256 on the other side.
    /// Returns the time it took.
    /// </summary>
    public static async Task<TimeSpan> TcpBulkAsync(NetworkNamespace server, IPAddress address, NetworkNamespace client, int bytes)
    {
        using var timeout = new CancellationTokenSource(Deadline);
        using var listener = server.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(address, 0));
        listener.Listen();
        var receiving = ReceiveHashAsync(listener, timeout.Token);
        var data = RandomNumberGenerator.GetBytes(bytes);
        var elapsed = Stopwatch.StartNew();
        using (var socket = client.CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync(listener.LocalEndPoint!, timeout.Token);
            await socket.SendAsync(data, SocketFlags.None, timeout.Token);
            socket.Shutdown(SocketShutdown.Send);
            var (count, hash) = await receiving;
            Assert.Equal(bytes, count);
            Assert.Equal(SHA256.HashData(data), hash);
        }

        return elapsed.Elapsed;
    }

    /// <summary>
    /// Sends a datagram of <paramref name="size"/> bytes from <paramref name="client"/> to <paramref name="address"/>
    /// and waits for the server's reply, a few times if one is lost. Returns the source address the server saw.
    /// </summary>
    public static async Task<IPAddress> UdpRoundTripAsync(NetworkNamespace server, IPAddress address, NetworkNamespace client, int size = 100)
    {
        using var serverSocket = server.CreateSocket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        serverSocket.Bind(new IPEndPoint(address, 0));
        using var clientSocket = client.CreateSocket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        var anyAddress = address.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any;
        clientSocket.Bind(new IPEndPoint(anyAddress, 0));
        var data = RandomNumberGenerator.GetBytes(size);
        var buffer = new byte[65536];
        for (var attempt = 0; attempt < 3; attempt++)
        {
            await clientSocket.SendToAsync(data, serverSocket.LocalEndPoint!);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try
            {
                var request = await serverSocket.ReceiveFromAsync(buffer, new IPEndPoint(anyAddress, 0), timeout.Token);
                Assert.True(buffer.AsSpan(0, request.ReceivedBytes).SequenceEqual(data), "the datagram arrived changed");
                await serverSocket.SendToAsync(buffer.AsMemory(0, request.ReceivedBytes), request.RemoteEndPoint);
                var reply = await clientSocket.ReceiveFromAsync(buffer, new IPEndPoint(anyAddress, 0), timeout.Token);
                Assert.True(buffer.AsSpan(0, reply.ReceivedBytes).SequenceEqual(data), "the reply arrived changed");
                return ((IPEndPoint)request.RemoteEndPoint).Address;
            }
            catch (OperationCanceledException)
            {
                // Lost (a neighbour entry not yet resolved, say): send again, three times at most.
            }
        }

        Assert.Fail($"no UDP round trip to {address} in 3 attempts of 2 s");
        return IPAddress.None;
    }

    /// <summary>True when a datagram arrives at <paramref name="socket"/> within <paramref name="wait"/>.</summary>
    public static async Task<bool> ReceivesAsync(Socket socket, TimeSpan wait)
    {
        using var timeout = new CancellationTokenSource(wait);
        try
        {
            await socket.ReceiveAsync(new byte[65536], SocketFlags.None, timeout.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>An IPv4 UDP packet (UDP checksum 0: none, which IPv4 allows), as a tunnel would carry it.</summary>
    public static byte[] Udp4Packet(IPAddress source, IPAddress destination, int port, ReadOnlySpan<byte> payload)
    {
        var packet = new byte[28 + payload.Length];
        packet[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
        packet[8] = 64;
        packet[9] = 17;
        source.TryWriteBytes(packet.AsSpan(12), out _);
        destination.TryWriteBytes(packet.AsSpan(16), out _);
        var checksum = (ushort)~InternetChecksum.Sum(packet.AsSpan(0, 20));
        System.Runtime.InteropServices.MemoryMarshal.Write(packet.AsSpan(10), checksum);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(20), 40000);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(22), (ushort)port);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(24), (ushort)(8 + payload.Length));
        payload.CopyTo(packet.AsSpan(28));
        return packet;
    }

    private static async Task<IPAddress> ServeEchoAsync(Socket listener, CancellationToken cancellationToken)
    {
        using var connection = await listener.AcceptAsync(cancellationToken);
        var buffer = new byte[65536];
        while (true)
        {
            var n = await connection.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                break;
            }

            await connection.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, cancellationToken);
        }

        connection.Shutdown(SocketShutdown.Send);
        return ((IPEndPoint)connection.RemoteEndPoint!).Address;
    }

    private static async Task<(long Count, byte[] Hash)> ReceiveHashAsync(Socket listener, CancellationToken cancellationToken)
    {
        using var connection = await listener.AcceptAsync(cancellationToken);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[65536];
        long count = 0;
        while (true)
        {
            var n = await connection.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                return (count, hash.GetHashAndReset());
            }

            hash.AppendData(buffer, 0, n);
            count += n;
        }
    }
}
