using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Switchover.Migration.Interop;
using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>
/// GRE in userspace, for kernels without ip_gre: a TUN device carries the inner packets, a raw IPPROTO_GRE socket the
/// outer ones (or, for <see cref="TunnelEncapsulation.GreInUdp"/>, a UDP socket connected from port 4754 to the
/// remote's port 4754). Two dedicated threads move packets: TUN → encapsulate → socket (tx) and socket → decapsulate → TUN (rx).
/// Each blocks in poll(2) on its descriptor and an eventfd that wakes it to stop, then drains a batch without blocking.
/// The TUN device has IFF_VNET_HDR and takes checksum and TCP (and, where the kernel has it, UDP) segmentation
/// offload, so that one read or write moves up to 64 KiB:
/// <list type="bullet">
/// <item>tx reads super-packets until the device is empty or <see cref="ReadBuffers"/> are in hand, splits each into
///   MTU-sized segments (<see cref="GsoSegmenter"/>: headers in a header slot behind the GRE header, payload left in
///   place) and sends up to <see cref="MaxMessages"/> GRE packets with one sendmmsg;</item>
/// <item>rx takes up to <see cref="BatchSize"/> GRE packets with one recvmmsg, checks them, merges consecutive TCP
///   segments of a flow (<see cref="TcpCoalescer"/>) and writes each super-packet with one write.</item>
/// </list>
/// The wire carries MTU-sized GRE packets (RFC 2784/2890), or the same in UDP datagrams (RFC 8086). In UDP the kernel
/// does the cutting and gluing: one sendmmsg message carries a run of equal-sized GRE packets with a UDP_SEGMENT
/// cmsg (one trip through the stack for the run), and one receive takes what UDP GRO merged, up to 64 KiB. Buffers
/// are allocated once, in native memory: nothing is allocated per packet.
/// </summary>
public sealed class UserspaceGreTunnel : IAsyncDisposable
{
    /// <summary>Packets per recvmmsg.</summary>
    internal const int BatchSize = 32;

    /// <summary>TUN reads per sendmmsg batch at most (each up to a 64 KiB super-packet).</summary>
    internal const int ReadBuffers = 32;

    /// <summary>GRE packets per sendmmsg at most: a batch is sent when the next super-packet's segments would not fit.</summary>
    internal const int MaxMessages = 256;

    /// <summary>The packet loops' nice value: ahead of ordinary processes (0), behind what asks for more.</summary>
    internal const int LoopNice = -10;

    /// <summary>Datagrams per UDP GSO send at most (UDP_MAX_SEGMENTS, 64 before Linux 6.10).</summary>
    internal const int UdpMaxSegments = 64;

    /// <summary>Datagrams one GRO read can hold at most: the kernel merges up to 64 (UDP_GRO_CNT_MAX); a GSO packet from the same kernel can carry 128.</summary>
    private const int MaxDatagramsPerRead = 128;

    /// <summary>The most UDP payload one send takes: 65535 less the IPv4 and UDP headers.</summary>
    private const int UdpMaxPayload = 65535 - 20 - 8;

    // A receive slot holds one GRE packet of up to 64 KiB, whatever MTU someone sets on the link later (a read into a
    // shorter buffer silently truncates the packet), behind room for the virtio_net_hdr; a super-packet merged into it
    // grows in place up to 64 KiB. A read buffer holds a virtio_net_hdr and a 64 KiB super-packet.
    private const int SlotRoom = 16;
    private const int SlotSize = SlotRoom + 60 + GreCodec.MaxLength + 65536 + 48;
    private const int ReadStride = VirtioNetHeader.Size + 65536 + 54;

    // A header slot: the GRE header, then a segment's IP and transport headers.
    private const int HeaderStride = GreCodec.MaxLength + GsoSegmenter.MaxHeaderLength;
    private const int ReceiveBufferBytes = 4 << 20;

    // GRE in UDP queues 64 KiB GRO packets, each charged more than its payload: 4 MiB overflowed (UdpRcvbufErrors,
    // and TCP retransmits inside) whenever the rx thread lost its core for a millisecond at 10 Gbit/s.
    private const int UdpReceiveBufferBytes = 32 << 20;
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(10);

    private readonly FileDescriptor _tun;
    private readonly FileDescriptor _socket;
    private readonly FileDescriptor _wake;
    private readonly uint _offloads;
    private readonly byte[] _remote = new byte[16];
    private readonly DirectionCounters _tx = new();
    private readonly DirectionCounters _rx = new();
    private readonly Thread _txThread;
    private readonly Thread _rxThread;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Exception? _fault;
    private long _txLoopAllocations = -1;
    private long _rxLoopAllocations = -1;
    private int _running;
    private int _disposed;

    // GRE in UDP: runs of GRE packets go as one UDP GSO send until the kernel refuses it (tx thread only).
    private bool _udpSegmentation = true;

    private UserspaceGreTunnel(TunnelOptions options, FileDescriptor tun, uint offloads, FileDescriptor socket, FileDescriptor wake)
    {
        Options = options;
        _offloads = offloads;
        _tun = tun;
        _socket = socket;
        _wake = wake;
        options.Remote.TryWriteBytes(_remote, out _);
        _txThread = new Thread(TransmitLoop) { IsBackground = true, Name = "gre tx " + options.Name };
        _rxThread = new Thread(ReceiveLoop) { IsBackground = true, Name = "gre rx " + options.Name };
    }

    public TunnelOptions Options { get; }

    /// <summary>Completes when both packet loops have stopped: after DisposeAsync, or faulted when one failed (e.g. the device was deleted).</summary>
    public Task Completion => _completion.Task;

    // internal for testing: managed bytes each loop allocated between its setup and its exit (-1 while it runs). Zero
    // is the claim: nothing is allocated per packet.
    internal (long Tx, long Rx) LoopAllocations => (Volatile.Read(ref _txLoopAllocations), Volatile.Read(ref _rxLoopAllocations));

    // internal for benchmarking: TUN reads (tx) and writes (rx) that carried packets. Packets per call is what the
    // offloads buy: 1 without them.
    internal (long Reads, long Writes) TunCalls => (Volatile.Read(ref _tx.TunCalls), Volatile.Read(ref _rx.TunCalls));

    // internal for testing: GRE in UDP still hands the kernel runs of GRE packets (false once it refused with EIO).
    internal bool SegmentsUdp => Volatile.Read(ref _udpSegmentation);

    /// <summary>A snapshot of the counters; the loops go on counting.</summary>
    public TunnelCounters Counters => new()
    {
        TxPackets = Volatile.Read(ref _tx.Packets),
        TxBytes = Volatile.Read(ref _tx.Bytes),
        TxErrors = Volatile.Read(ref _tx.Errors),
        TxTooBig = Volatile.Read(ref _tx.TooBig),
        TxDropped = Volatile.Read(ref _tx.Dropped),
        TxRefused = Volatile.Read(ref _rx.Refused),
        RxPackets = Volatile.Read(ref _rx.Packets),
        RxBytes = Volatile.Read(ref _rx.Bytes),
        RxErrors = Volatile.Read(ref _rx.Errors),
        RxStray = Volatile.Read(ref _rx.Stray),
        RxWrongKey = Volatile.Read(ref _rx.WrongKey),
        RxMalformed = Volatile.Read(ref _rx.Malformed),
    };

    /// <summary>
    /// Creates the TUN device and the raw socket (in <see cref="TunnelOptions.NetworkNamespace"/> when set), sets the
    /// MTU, brings the device up and starts the packet loops. Needs root, or CAP_NET_ADMIN and CAP_NET_RAW.
    /// </summary>
    public static Task<UserspaceGreTunnel> StartAsync(TunnelOptions options, CancellationToken cancellationToken) =>
        StartAsync(options, CommandRunner.Instance, cancellationToken);

    internal static async Task<UserspaceGreTunnel> StartAsync(TunnelOptions options, ICommandRunner runner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.ThrowIfInvalid();
        cancellationToken.ThrowIfCancellationRequested();
        var (tun, offloads, socket, wake) = options.NetworkNamespace is { } ns
            ? await NetworkNamespaceEntry.RunAsync(ns, () => OpenDescriptors(options)).ConfigureAwait(false)
            : OpenDescriptors(options);
        var tunnel = new UserspaceGreTunnel(options, tun, offloads, socket, wake);
        try
        {
            // A TUN device that is down answers writes with EIO, and one without an MTU set would take 1500-byte
            // packets that no longer fit once encapsulated.
            await runner.RunAsync(IpCommand(options, "link", "set", "dev", options.Name,
                "mtu", options.EffectiveMtu.ToString(CultureInfo.InvariantCulture), "up"), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is CommandException or OperationCanceledException)
        {
            tunnel.CloseDescriptors();
            if (e is OperationCanceledException)
            {
                throw;
            }

            throw new TunnelException($"Could not set MTU {options.EffectiveMtu} on {options.Name} and bring it up: {e.Message}", e);
        }

        tunnel.StartLoops();
        return tunnel;
    }

    /// <summary>Stops the loops, closes the socket and the TUN device (which removes the interface). Idempotent.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            await Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            return;
        }

        if (Volatile.Read(ref _running) == 0)
        {
            CloseDescriptors();
            _completion.TrySetResult();
            return;
        }

        Wake();
        var stopped = await Task.Run(() => _txThread.Join(StopTimeout) & _rxThread.Join(StopTimeout)).ConfigureAwait(false);
        if (stopped)
        {
            CloseDescriptors();
        }

        // A loop stuck past the timeout (it cannot be, short of a kernel bug) keeps its descriptors and buffers:
        // freeing them under it would be worse than the leak.
        _completion.TrySetResult();
    }

    internal static Command IpCommand(TunnelOptions options, params string[] arguments) =>
        options.NetworkNamespace is { } ns ? new Command("ip", ["-n", ns, .. arguments]) : new Command("ip", arguments);

    private static unsafe (FileDescriptor Tun, uint Offloads, FileDescriptor Socket, FileDescriptor Wake) OpenDescriptors(TunnelOptions options)
    {
        var tun = Libc.OpenTun(options.Name, Libc.IFF_VNET_HDR);
        FileDescriptor? socket = null;
        try
        {
            var offloads = SetOffloads(tun, options);
            socket = OpenSocket(options);
            var wake = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (wake < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"eventfd failed: {Libc.Describe(errno)}.", errno);
            }

            return (tun, offloads, socket, new FileDescriptor(wake));
        }
        catch
        {
            socket?.Dispose();
            tun.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Tells the kernel what this reader of the TUN device takes: partial checksums and TCP super-packets (TSO), and
    /// UDP super-packets where the kernel knows USO (6.2 and later). Returns what was accepted (0 with
    /// <see cref="TunnelOptions.DisableOffload"/>: one MTU-sized packet per read, checksums complete).
    /// </summary>
    private static uint SetOffloads(FileDescriptor tun, TunnelOptions options)
    {
        if (options.DisableOffload)
        {
            var none = Libc.SetTunOffload(tun, 0);
            return none == 0 ? 0u
                : throw new TunnelException($"Could not clear the offloads of TUN device {options.Name} (TUNSETOFFLOAD): {Libc.Describe(none)}.", none);
        }

        const uint Tcp = Libc.TUN_F_CSUM | Libc.TUN_F_TSO4 | Libc.TUN_F_TSO6;
        const uint Udp = Libc.TUN_F_USO4 | Libc.TUN_F_USO6;
        if (Libc.SetTunOffload(tun, Tcp | Udp) == 0)
        {
            return Tcp | Udp;
        }

        var errno = Libc.SetTunOffload(tun, Tcp);
        return errno == 0 ? Tcp : throw new TunnelException(
            $"Could not enable checksum and TCP segmentation offload on TUN device {options.Name} (TUNSETOFFLOAD): {Libc.Describe(errno)}.", errno);
    }

    /// <summary>The TUN_F_* offloads the kernel accepted for this tunnel's device (0 when disabled).</summary>
    internal uint Offloads => _offloads;

    private static unsafe FileDescriptor OpenSocket(TunnelOptions options)
    {
        var v6 = options.OuterFamily == AddressFamily.InterNetworkV6;
        var udp = options.Encapsulation == TunnelEncapsulation.GreInUdp;
        var fd = udp
            ? Libc.Socket(v6 ? Libc.AF_INET6 : Libc.AF_INET, Libc.SOCK_DGRAM | Libc.SOCK_CLOEXEC, Libc.IPPROTO_UDP)
            : Libc.Socket(v6 ? Libc.AF_INET6 : Libc.AF_INET, Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, Libc.IPPROTO_GRE);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new TunnelException(udp
                ? $"Could not open a UDP socket for GRE in UDP: {Libc.Describe(errno)}."
                : $"Could not open a raw GRE socket: {Libc.Describe(errno)}. Run as root or grant CAP_NET_RAW.", errno);
        }

        var socket = new FileDescriptor(fd);
        try
        {
            if (options.FirewallMark is { } mark && Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_MARK, unchecked((int)mark)) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"Could not set mark 0x{mark:x} on the GRE socket (SO_MARK): {Libc.Describe(errno)}. " +
                    "Run as root or grant CAP_NET_ADMIN.", errno);
            }

            if (Libc.SetSockOpt(fd, v6 ? Libc.IPPROTO_IPV6 : Libc.IPPROTO_IP, v6 ? Libc.IPV6_UNICAST_HOPS : Libc.IP_TTL, options.Ttl) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"Could not set TTL {options.Ttl} on the GRE socket: {Libc.Describe(errno)}.", errno);
            }

            // Room for bursts while the rx thread writes to the TUN device. FORCE may exceed rmem_max, with CAP_NET_ADMIN.
            if (Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_RCVBUFFORCE, udp ? UdpReceiveBufferBytes : ReceiveBufferBytes) != 0)
            {
                _ = Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_RCVBUF, udp ? UdpReceiveBufferBytes : ReceiveBufferBytes);
            }

            // A send that waits for buffer space longer than this is dropped and counted, so that stopping never waits on it.
            long* timeout = stackalloc long[2] { 1, 0 };
            _ = Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_SNDTIMEO, timeout, 16);

            // Binding a raw socket sets the source of what it sends and accepts only packets to that address. A UDP
            // socket is bound to port 4754 of it and connected to the remote's, so that the kernel delivers only the
            // remote's datagrams, and it takes 64 KiB of them at a time: GRO merges consecutive datagrams of the
            // remote into one read, which says their size (UDP_GRO).
            var port = udp ? TunnelOptions.GreInUdpPort : (ushort)0;
            byte* address = stackalloc byte[Libc.SockaddrStorageSize];
            var length = Libc.WriteSockaddr(options.Local, port, new Span<byte>(address, Libc.SockaddrStorageSize));
            if (Libc.Bind(fd, address, (uint)length) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"Could not bind the GRE socket to local address {options.Local}" + (udp ? $" port {port}" : "") +
                    $": {Libc.Describe(errno)}. " +
                    (errno == Libc.EADDRNOTAVAIL
                        ? $"{options.Local} is not an address of this host" + (options.NetworkNamespace is { } ns ? $" (namespace {ns})" : "") +
                          ": add it to an interface, or give the right Local address."
                        : udp && errno == Libc.EADDRINUSE
                            ? $"Another socket holds UDP port {port} on {options.Local}: one GRE-in-UDP tunnel per local address."
                            : "Check the Local address."),
                    errno);
            }

            if (udp)
            {
                length = Libc.WriteSockaddr(options.Remote, port, new Span<byte>(address, Libc.SockaddrStorageSize));
                if (Libc.Connect(fd, address, (uint)length) != 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw new TunnelException($"Could not connect the GRE-in-UDP socket to {options.Remote} port {port}: {Libc.Describe(errno)}. " +
                        "Is there a route to the remote address?", errno);
                }

                if (Libc.SetSockOpt(fd, Libc.SOL_UDP, Libc.UDP_GRO, 1) != 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw new TunnelException($"Could not enable UDP GRO on the GRE-in-UDP socket: {Libc.Describe(errno)}. It needs Linux 5.0 or later.", errno);
                }
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private void StartLoops()
    {
        Volatile.Write(ref _running, 2);
        _txThread.Start();
        _rxThread.Start();
    }

    private unsafe void Wake()
    {
        ulong one = 1;
        _ = Libc.Write(_wake.Value, (byte*)&one, sizeof(ulong));
    }

    private void CloseDescriptors()
    {
        _tun.Dispose();
        _socket.Dispose();
        _wake.Dispose();
    }

    private void LoopExited(Exception? fault)
    {
        if (fault is not null && Volatile.Read(ref _disposed) == 0)
        {
            Interlocked.CompareExchange(ref _fault, fault, null);

            // One loop cannot carry on alone in a useful way: stop the other, and report the tunnel as failed.
            Wake();
        }

        if (Interlocked.Decrement(ref _running) == 0 && _fault is { } failure && Volatile.Read(ref _disposed) == 0)
        {
            _completion.TrySetException(failure);
        }
    }

    private unsafe void TransmitLoop()
    {
        Exception? fault = null;
        var tunAdded = false;
        var socketAdded = false;
        var memory = (byte*)NativeMemory.AlignedAlloc((nuint)(ReadBuffers * ReadStride +
            MaxMessages * (HeaderStride + sizeof(MMsgHdr) + 2 * sizeof(IoVec) + CMsgHdr.Space8) +
            ReadBuffers * sizeof(byte*) + Libc.SockaddrStorageSize), 64);
        var segments = new GsoSegment[MaxMessages];
        try
        {
            RaisePriority();
            _tun.DangerousAddRef(ref tunAdded);
            _socket.DangerousAddRef(ref socketAdded);
            int tun = _tun.Value, socket = _socket.Value, wake = _wake.Value;

            var headers = memory + ReadBuffers * ReadStride;
            var messages = (MMsgHdr*)(headers + MaxMessages * HeaderStride);
            var iovs = (IoVec*)(messages + MaxMessages);
            var controls = (byte*)(iovs + 2 * MaxMessages);
            var buffers = (byte**)(controls + MaxMessages * CMsgHdr.Space8);
            var remote = (byte*)(buffers + ReadBuffers);
            var remoteLength = (uint)Libc.WriteSockaddr(Options.Remote, new Span<byte>(remote, Libc.SockaddrStorageSize));
            for (var i = 0; i < ReadBuffers; i++)
            {
                buffers[i] = memory + i * ReadStride;
            }

            // GRE: a message per packet, to the remote's address. GRE in UDP: the socket is connected, and a message
            // carries a run of equal-sized GRE packets (a super-packet's segments) that the kernel sends as one
            // UDP GSO packet, cut at the size in its UDP_SEGMENT cmsg.
            var udp = Options.Encapsulation == TunnelEncapsulation.GreInUdp;
            for (var i = 0; i < MaxMessages; i++)
            {
                iovs[2 * i].Base = headers + i * HeaderStride;
                messages[i] = default;
                messages[i].Header.Name = udp ? null : remote;
                messages[i].Header.NameLength = udp ? 0 : remoteLength;
                messages[i].Header.Iov = iovs + 2 * i;
                messages[i].Header.IovLength = 2;
                var control = (CMsgHdr*)(controls + i * CMsgHdr.Space8);
                control->Length = CMsgHdr.Size + sizeof(ushort);
                control->Level = Libc.SOL_UDP;
                control->Type = Libc.UDP_SEGMENT;
            }

            var key = Options.Key;
            var checksum = Options.SendChecksum;
            var sequenced = Options.SendSequenceNumbers;
            var greLength = Options.GreHeaderLength;

            // The kernel writes the outer header. Writing it here (IP_HDRINCL) saved about a quarter of the send
            // thread's kernel time, but a header-included raw socket is routed as protocol 255, not 47: policy rules
            // that select GRE by `ipproto gre` stop matching. The migration's new host has such a rule (its outer GRE
            // to the old host's address, which it also holds, must leave by the uplink), and its GRE then looped back
            // to itself. See docs/gre-offload.md.
            var prefix = greLength;
            uint sequence = 0;
            PollFd* fds = stackalloc PollFd[2];
            fds[0] = new PollFd { Fd = tun, Events = Libc.POLLIN };
            fds[1] = new PollFd { Fd = wake, Events = Libc.POLLIN };
            var what = "the TUN device " + Options.Name;
            ResolveNativeCalls(messages);
            var allocated = GC.GetAllocatedBytesForCurrentThread();
            while (true)
            {
                if (!WaitReadable(fds, what, out fault))
                {
                    break;
                }

                // Read until the device is empty, or the read buffers or the header slots run out: a batch is one
                // sendmmsg. A GRE packet's headers are in its header slot (count of them used) behind the GRE header;
                // its payload stays in the read buffer. sent counts the messages of the batch.
                var count = 0;
                var sent = 0;
                var used = 0;
                while (true)
                {
                    if (used == ReadBuffers)
                    {
                        Send(socket, messages, sent, prefix);
                        count = 0;
                        sent = 0;
                        used = 0;
                    }

                    var buffer = buffers[used];
                    var read = Libc.Read(tun, buffer, ReadStride);
                    if (read < 0)
                    {
                        var errno = Marshal.GetLastPInvokeError();
                        if (errno == Libc.EINTR)
                        {
                            continue;
                        }

                        if (errno != Libc.EAGAIN)
                        {
                            fault = new TunnelException($"Reading from the TUN device {Options.Name} failed: {Libc.Describe(errno)}. " +
                                "Was the interface deleted?", errno);
                        }

                        break;
                    }

                    _tx.TunCalls++;
                    var vnet = *(VirtioNetHeader*)buffer;
                    var packet = new Span<byte>(buffer + VirtioNetHeader.Size, Math.Max(0, (int)read - VirtioNetHeader.Size));
                    var protocol = GreCodec.ProtocolOf(packet);
                    if (protocol == 0)
                    {
                        _tx.Dropped++;
                        continue;
                    }

                    if (vnet.GsoType == VirtioNetHeader.GsoNone)
                    {
                        if ((vnet.Flags & VirtioNetHeader.FlagNeedsCsum) != 0 && GsoSegmenter.CompleteChecksum(vnet, packet) != GsoStatus.Ok)
                        {
                            _tx.Dropped++;
                            continue;
                        }

                        if (count == MaxMessages)
                        {
                            Send(socket, messages, sent, prefix);
                            count = 0;
                            sent = 0;
                            Swap(buffers, used);
                            used = 0;
                        }

                        var header = new Span<byte>(headers + count * HeaderStride, greLength);
                        GreCodec.WriteHeader(new GreHeader(protocol, key, sequenced ? sequence++ : null, checksum), header, packet);
                        iovs[2 * count].Length = (nuint)prefix;
                        iovs[2 * count + 1].Base = buffer + VirtioNetHeader.Size;
                        iovs[2 * count + 1].Length = (nuint)packet.Length;
                        Message(messages, controls, sent++, iovs, count, 1, null);
                        count++;
                        used++;
                        continue;
                    }

                    var status = GsoSegmenter.Split(vnet, packet, new Span<byte>(headers + count * HeaderStride, (MaxMessages - count) * HeaderStride),
                        HeaderStride, prefix, segments.AsSpan(0, MaxMessages - count), out var split);
                    if (status == GsoStatus.TooManySegments && count > 0)
                    {
                        // Not enough header slots left in this batch: send it, then split into an empty one.
                        Send(socket, messages, sent, prefix);
                        count = 0;
                        sent = 0;
                        Swap(buffers, used);
                        used = 0;
                        buffer = buffers[0];
                        packet = new Span<byte>(buffer + VirtioNetHeader.Size, packet.Length);
                        status = GsoSegmenter.Split(vnet, packet, new Span<byte>(headers, MaxMessages * HeaderStride),
                            HeaderStride, prefix, segments, out split);
                    }

                    if (status != GsoStatus.Ok)
                    {
                        _tx.Dropped++;
                        continue;
                    }

                    var first = count;
                    var runs = udp && _udpSegmentation;
                    for (var i = 0; i < split; i++)
                    {
                        var segment = segments[i];
                        var slot = headers + count * HeaderStride;
                        var payload = new ReadOnlySpan<byte>(buffer + VirtioNetHeader.Size + segment.PayloadOffset, segment.PayloadLength);
                        GreCodec.WriteHeader(new GreHeader(protocol, key, sequenced ? sequence++ : null, checksum),
                            new Span<byte>(slot, greLength + segment.HeaderLength), payload);
                        iovs[2 * count].Length = (nuint)(prefix + segment.HeaderLength);
                        iovs[2 * count + 1].Base = buffer + VirtioNetHeader.Size + segment.PayloadOffset;
                        iovs[2 * count + 1].Length = (nuint)segment.PayloadLength;
                        if (!runs)
                        {
                            Message(messages, controls, sent++, iovs, count, 1, null);
                        }

                        count++;
                    }

                    if (runs)
                    {
                        // Every segment but the last has the first one's size: runs of as many as one UDP GSO send takes.
                        var size = prefix + segments[0].Length;
                        var run = Math.Min(UdpMaxSegments, UdpMaxPayload / size);
                        for (var at = 0; at < split; at += run)
                        {
                            Message(messages, controls, sent++, iovs, first + at, Math.Min(run, split - at), (ushort)size);
                        }
                    }

                    used++;
                }

                Send(socket, messages, sent, prefix);
                if (fault is not null)
                {
                    break;
                }
            }

            Volatile.Write(ref _txLoopAllocations, GC.GetAllocatedBytesForCurrentThread() - allocated);
        }
#pragma warning disable CA1031 // A failing loop reports through Completion; it must never take the process down.
        catch (Exception e)
#pragma warning restore CA1031
        {
            fault = e;
        }
        finally
        {
            NativeMemory.AlignedFree(memory);
            if (socketAdded)
            {
                _socket.DangerousRelease();
            }

            if (tunAdded)
            {
                _tun.DangerousRelease();
            }

            LoopExited(fault);
        }
    }

    /// <summary>
    /// Makes message <paramref name="index"/> of a batch carry <paramref name="packets"/> GRE packets from iovec pair
    /// <paramref name="first"/> on: one, or with <paramref name="segmentSize"/> a run that the kernel cuts into
    /// datagrams of that size (its control buffer, set up once, holds the UDP_SEGMENT cmsg).
    /// </summary>
    private static unsafe void Message(MMsgHdr* messages, byte* controls, int index, IoVec* iovs, int first, int packets, ushort? segmentSize)
    {
        ref var header = ref messages[index].Header;
        header.Iov = iovs + 2 * first;
        header.IovLength = (nuint)(2 * packets);
        if (segmentSize is { } size && packets > 1)
        {
            header.Control = controls + index * CMsgHdr.Space8;
            *(ushort*)((byte*)header.Control + CMsgHdr.Size) = size;
            header.ControlLength = CMsgHdr.Space8;
        }
        else
        {
            header.Control = null;
            header.ControlLength = 0;
        }
    }

    /// <summary>
    /// The kernel's own GRE runs in softirq context, ahead of every process; a packet loop that waits behind the
    /// processes whose traffic it carries throttles them. So each loop's thread takes nice <see cref="LoopNice"/>,
    /// where it may (CAP_SYS_NICE, as root); elsewhere it keeps its nice value.
    /// </summary>
    private static void RaisePriority() => _ = Libc.SetPriority(Libc.PRIO_PROCESS, (uint)Libc.GetTid(), LoopNice);

    private static unsafe void Swap(byte** buffers, int used)
    {
        var first = buffers[0];
        buffers[0] = buffers[used];
        buffers[used] = first;
    }

    private unsafe void Send(int socket, MMsgHdr* messages, int count, int headerLength)
    {
        var sent = 0;
        while (sent < count)
        {
            var result = Libc.SendMmsg(socket, messages + sent, (uint)(count - sent), 0);
            if (result < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR)
                {
                    continue;
                }

                if (messages[sent].Header.Control != null && errno is Libc.EIO or Libc.EINVAL)
                {
                    // The kernel refused to segment this run: before Linux 6.6 it does so for every send on a device
                    // without checksum offload (EIO), and for a run whose datagrams exceed the path MTU (EINVAL).
                    // Its packets go one by one; after EIO, every later run too.
                    _udpSegmentation &= errno != Libc.EIO;
                    SendOneByOne(socket, messages + sent, headerLength);
                    sent++;
                    continue;
                }

                // The first message of the rest failed: count its packets and go on with the next one.
                var lost = (long)messages[sent].Header.IovLength / 2;
                _tx.Errors += lost;
                if (errno == Libc.EMSGSIZE)
                {
                    _tx.TooBig += lost;
                }

                sent++;
                continue;
            }

            // Each message carries one or more GRE packets, an iovec pair each (headers, payload).
            for (var i = sent; i < sent + result; i++)
            {
                var iov = messages[i].Header.Iov;
                var end = iov + messages[i].Header.IovLength;
                for (; iov < end; iov += 2)
                {
                    _tx.Packets++;
                    _tx.Bytes += (long)(iov[0].Length + iov[1].Length) - headerLength;
                }
            }

            sent += result;
        }
    }

    /// <summary>Sends each GRE packet of a UDP GSO run as a datagram of its own (the message is changed to do so).</summary>
    private unsafe void SendOneByOne(int socket, MMsgHdr* message, int headerLength)
    {
        var iov = message->Header.Iov;
        var end = iov + message->Header.IovLength;
        message->Header.Control = null;
        message->Header.ControlLength = 0;
        message->Header.IovLength = 2;
        for (; iov < end; iov += 2)
        {
            message->Header.Iov = iov;
            int result;
            do
            {
                result = Libc.SendMmsg(socket, message, 1, 0);
            }
            while (result < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR);

            if (result == 1)
            {
                _tx.Packets++;
                _tx.Bytes += (long)(iov[0].Length + iov[1].Length) - headerLength;
            }
            else
            {
                _tx.Errors++;
                if (Marshal.GetLastPInvokeError() == Libc.EMSGSIZE)
                {
                    _tx.TooBig++;
                }
            }
        }
    }

    private unsafe void ReceiveLoop()
    {
        Exception? fault = null;
        var tunAdded = false;
        var socketAdded = false;
        var memory = (byte*)NativeMemory.AlignedAlloc(
            (nuint)(BatchSize * (SlotSize + sizeof(MMsgHdr) + sizeof(IoVec) + CMsgHdr.Space8 + Libc.SockaddrStorageSize + 4)), 64);
        var udp = Options.Encapsulation == TunnelEncapsulation.GreInUdp;

        // GRE in UDP: a read is a run of datagrams that GRO merged, each a GRE packet, up to 64 KiB.
        var coalescer = new TcpCoalescer(udp ? BatchSize * MaxDatagramsPerRead : BatchSize);
        try
        {
            RaisePriority();
            _tun.DangerousAddRef(ref tunAdded);
            _socket.DangerousAddRef(ref socketAdded);
            int tun = _tun.Value, socket = _socket.Value, wake = _wake.Value;

            var slots = memory;
            var messages = (MMsgHdr*)(slots + BatchSize * SlotSize);
            var iovs = (IoVec*)(messages + BatchSize);
            var controls = (byte*)(iovs + BatchSize);
            var names = controls + BatchSize * CMsgHdr.Space8;
            const int NameSize = Libc.SockaddrStorageSize + 4;
            for (var i = 0; i < BatchSize; i++)
            {
                // Room in front of what arrives for the virtio_net_hdr the TUN write needs (an IPv6 raw socket delivers
                // no outer header to put it over); room behind it for the segments merged into it.
                iovs[i].Base = slots + i * SlotSize + SlotRoom;
                iovs[i].Length = SlotSize - SlotRoom;
                messages[i] = default;
                messages[i].Header.Iov = iovs + i;
                messages[i].Header.IovLength = 1;
                messages[i].Header.Name = udp ? null : names + i * NameSize;
            }

            var v4 = Options.OuterFamily == AddressFamily.InterNetwork;
            var remote = v4 ? _remote.AsSpan(0, 4) : _remote.AsSpan(0, 16);
            var key = Options.Key;
            var coalesce = _offloads != 0;
            PollFd* fds = stackalloc PollFd[2];
            fds[0] = new PollFd { Fd = socket, Events = Libc.POLLIN };
            fds[1] = new PollFd { Fd = wake, Events = Libc.POLLIN };
            ResolveNativeCalls(messages);
            var allocated = GC.GetAllocatedBytesForCurrentThread();
            while (WaitReadable(fds, "the GRE socket", out fault, udp ? _rx : null))
            {
                for (var i = 0; i < BatchSize; i++)
                {
                    ref var header = ref messages[i].Header;
                    header.Flags = 0;
                    if (udp)
                    {
                        header.Control = controls + i * CMsgHdr.Space8;
                        header.ControlLength = CMsgHdr.Space8;
                    }
                    else
                    {
                        header.NameLength = NameSize;
                    }
                }

                var count = Libc.RecvMmsg(socket, messages, BatchSize, Libc.MSG_DONTWAIT, null);
                if (count < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno is not (Libc.EINTR or Libc.EAGAIN))
                    {
                        _rx.Errors++;
                    }

                    continue;
                }

                coalescer.Reset();
                for (var i = 0; i < count; i++)
                {
                    ref var message = ref messages[i];
                    var end = slots + (i + 1) * SlotSize;
                    if ((message.Header.Flags & Libc.MSG_TRUNC) != 0)
                    {
                        _rx.Malformed++;
                        continue;
                    }

                    var data = new ReadOnlySpan<byte>(message.Header.Iov->Base, (int)message.Length);
                    if (!udp)
                    {
                        if (Unwrap(ref message, remote, v4, ref data) && Decapsulate(data, key, out var inner, out var length))
                        {
                            Offer(coalescer, coalesce, inner, length, end);
                        }

                        continue;
                    }

                    // The kernel's GRO gives the size of the datagrams it merged (all but the last have it); a read
                    // without the cmsg is one datagram.
                    var size = GroSegmentSize(ref message.Header) is var gro and > 0 ? gro : data.Length;
                    for (var at = 0; at < data.Length; at += size)
                    {
                        if (coalescer.Count == coalescer.Capacity)
                        {
                            _rx.Malformed++;
                            break;
                        }

                        if (Decapsulate(data.Slice(at, Math.Min(size, data.Length - at)), key, out var inner, out var length))
                        {
                            Offer(coalescer, coalesce, inner, length, end);
                        }
                    }
                }

                for (var i = 0; i < coalescer.Count; i++)
                {
                    var (start, length, segments, bytes) = coalescer.Finish(i);
                    if (Libc.Write(tun, (byte*)start, (nuint)length) < 0)
                    {
                        _rx.Errors++;
                        continue;
                    }

                    _rx.TunCalls++;
                    _rx.Packets += segments;
                    _rx.Bytes += bytes;
                }
            }

            Volatile.Write(ref _rxLoopAllocations, GC.GetAllocatedBytesForCurrentThread() - allocated);
        }
#pragma warning disable CA1031 // A failing loop reports through Completion; it must never take the process down.
        catch (Exception e)
#pragma warning restore CA1031
        {
            fault = e;
        }
        finally
        {
            NativeMemory.AlignedFree(memory);
            if (socketAdded)
            {
                _socket.DangerousRelease();
            }

            if (tunAdded)
            {
                _tun.DangerousRelease();
            }

            LoopExited(fault);
        }
    }

    private static unsafe void Offer(TcpCoalescer coalescer, bool coalesce, byte* inner, int length, byte* end)
    {
        if (coalesce)
        {
            coalescer.Add(inner, length, (int)(end - inner));
        }
        else
        {
            coalescer.AddAlone(inner, length);
        }
    }

    /// <summary>The gso_size of a UDP_GRO cmsg that recvmsg left in the message's control buffer, or 0.</summary>
    private static unsafe int GroSegmentSize(ref MsgHdr header)
    {
        if (header.ControlLength < CMsgHdr.Size + sizeof(int))
        {
            return 0;
        }

        var control = (CMsgHdr*)header.Control;
        return control->Level == Libc.SOL_UDP && control->Type == Libc.UDP_GRO ? *(int*)((byte*)control + CMsgHdr.Size) : 0;
    }

    /// <summary>
    /// A raw socket's packet: checks its source against the remote and takes off the outer IPv4 header (an IPv6 raw
    /// socket delivers none); false when it is to be dropped (counted).
    /// </summary>
    private bool Unwrap(ref MMsgHdr message, ReadOnlySpan<byte> remote, bool v4, ref ReadOnlySpan<byte> data)
    {
        // The source first: nothing from a stranger is parsed beyond what it takes to count it.
        unsafe
        {
            var name = message.Header.Name;
            var source = v4 ? new ReadOnlySpan<byte>(name + 4, 4) : new ReadOnlySpan<byte>(name + 8, 16);
            if (!source.SequenceEqual(remote))
            {
                _rx.Stray++;
                return false;
            }
        }

        if (v4)
        {
            var headerLength = data.IsEmpty ? 0 : (data[0] & 0x0F) * 4;
            if (data.IsEmpty || data[0] >> 4 != 4 || headerLength < 20 || headerLength > data.Length)
            {
                _rx.Malformed++;
                return false;
            }

            data = data[headerLength..];
        }

        return true;
    }

    /// <summary>Checks one GRE packet from the remote; true with the inner packet when it is to be delivered.</summary>
    private unsafe bool Decapsulate(ReadOnlySpan<byte> data, uint? key, out byte* inner, out int length)
    {
        inner = null;
        length = 0;
        var status = GreCodec.Decode(data, out var header, out var payload);
        if (status != GreDecodeStatus.Ok)
        {
            _rx.Malformed++;
            return false;
        }

        if (header.Key != key)
        {
            _rx.WrongKey++;
            return false;
        }

        // The TUN device tells IPv4 from IPv6 by the version nibble: it must agree with the GRE protocol type.
        if (GreCodec.ProtocolOf(payload) != header.ProtocolType)
        {
            _rx.Malformed++;
            return false;
        }

        fixed (byte* start = payload)
        {
            inner = start;
        }

        length = payload.Length;

        // A sender in the same kernel (veth, namespaces) may leave the inner checksum partial: see PartialChecksum.
        PartialChecksum.Complete(new Span<byte>(inner, length));
        return true;
    }

    /// <summary>
    /// Calls each native function of the loops once, harmlessly (no descriptors, zero lengths), so that resolving their
    /// entry points (which allocates a little, once) happens before the loops count their allocations.
    /// </summary>
    private static unsafe void ResolveNativeCalls(MMsgHdr* messages)
    {
        _ = Libc.Poll(null, 0, 0);
        _ = Libc.Read(-1, null, 0);
        _ = Libc.Write(-1, null, 0);
        _ = Libc.SendMmsg(-1, messages, 0, 0);
        _ = Libc.RecvMmsg(-1, messages, 0, Libc.MSG_DONTWAIT, null);
        _ = Libc.GetSockOpt(-1, 0, 0, null, null);
        _ = Marshal.GetLastPInvokeError();
    }

    /// <summary>
    /// Blocks until the descriptor is readable (true) or the eventfd asks to stop or the descriptor failed (false).
    /// With <paramref name="socketErrors"/>, the descriptor is a connected UDP socket: an error pending on it is taken
    /// off and counted there (an ICMP port unreachable, while the other end is not up yet, as Refused), and the wait
    /// goes on.
    /// </summary>
    private static unsafe bool WaitReadable(PollFd* fds, string what, out Exception? fault, DirectionCounters? socketErrors = null)
    {
        fault = null;
        while (true)
        {
            fds[0].ReturnedEvents = 0;
            fds[1].ReturnedEvents = 0;
            var ready = Libc.Poll(fds, 2, -1);
            if (ready < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR)
                {
                    continue;
                }

                fault = new TunnelException($"poll on {what} failed: {Libc.Describe(errno)}.", errno);
                return false;
            }

            if (fds[1].ReturnedEvents != 0)
            {
                return false;
            }

            if (socketErrors is not null && (fds[0].ReturnedEvents & Libc.POLLERR) != 0)
            {
                int error;
                uint length = sizeof(int);
                if (Libc.GetSockOpt(fds[0].Fd, Libc.SOL_SOCKET, Libc.SO_ERROR, &error, &length) == 0)
                {
                    if (error == Libc.ECONNREFUSED)
                    {
                        socketErrors.Refused++;
                    }
                    else
                    {
                        socketErrors.Errors++;
                    }

                    if ((fds[0].ReturnedEvents & Libc.POLLIN) == 0)
                    {
                        continue;
                    }

                    return true;
                }
            }

            if ((fds[0].ReturnedEvents & (Libc.POLLERR | Libc.POLLHUP | Libc.POLLNVAL)) != 0)
            {
                fault = new TunnelException($"{what} reported an error (poll events 0x{fds[0].ReturnedEvents:x}). Was the interface deleted?");
                return false;
            }

            if ((fds[0].ReturnedEvents & Libc.POLLIN) != 0)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// One direction's counters, written by that direction's thread only and read with Volatile.Read. Padded so the
    /// two directions' counters do not share a cache line.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    private sealed class DirectionCounters
    {
#pragma warning disable CA1823, IDE0051, CS0169 // Padding.
        private readonly long _padBefore0, _padBefore1, _padBefore2, _padBefore3, _padBefore4, _padBefore5, _padBefore6, _padBefore7;
#pragma warning restore CA1823, IDE0051, CS0169
        public long Packets;
        public long Bytes;
        public long Errors;
        public long TooBig;
        public long Dropped;
        public long Stray;
        public long WrongKey;
        public long Malformed;

        /// <summary>GRE in UDP: ICMP port unreachable reports from the remote, taken off the socket by the rx thread.</summary>
        public long Refused;

        /// <summary>Reads from (tx) or writes to (rx) the TUN device that carried a packet: with offloads, fewer than Packets.</summary>
        public long TunCalls;
#pragma warning disable CA1823, IDE0051, CS0169 // Padding.
        private readonly long _padAfter0, _padAfter1, _padAfter2, _padAfter3, _padAfter4, _padAfter5, _padAfter6, _padAfter7;
#pragma warning restore CA1823, IDE0051, CS0169
    }
}
