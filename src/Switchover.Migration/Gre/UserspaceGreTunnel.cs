using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Switchover.Migration.Interop;
using Switchover.Processes;

namespace Switchover.Migration.Gre;

/// <summary>
/// GRE in userspace, for kernels without ip_gre: a TUN device carries the inner packets, a raw IPPROTO_GRE socket the
/// outer ones. Two dedicated threads move packets: TUN → encapsulate → socket (tx) and socket → decapsulate → TUN (rx).
/// Each blocks in poll(2) on its descriptor and an eventfd that wakes it to stop, then drains a batch without blocking:
/// up to <see cref="BatchSize"/> reads from the TUN device sent with one sendmmsg, or one recvmmsg of up to
/// <see cref="BatchSize"/> GRE packets. The TUN device gives and takes one packet per read or write; the kernel has no
/// batch call for it (short of virtio-net headers and GSO, which are not used here). Buffers are allocated once, in
/// native memory: nothing is allocated per packet.
/// </summary>
public sealed class UserspaceGreTunnel : IAsyncDisposable
{
    /// <summary>Packets per recvmmsg, and per sendmmsg at most.</summary>
    internal const int BatchSize = 32;

    // A slot holds one packet: room for the GRE header, then up to 64 KiB, whatever MTU someone sets on the device
    // later (a TUN read into a shorter buffer silently truncates the packet).
    private const int SlotPayload = 65536;
    private const int SlotSize = GreCodec.MaxLength + SlotPayload + 48;
    private const int ReceiveBufferBytes = 4 << 20;
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(10);

    private readonly FileDescriptor _tun;
    private readonly FileDescriptor _socket;
    private readonly FileDescriptor _wake;
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

    private UserspaceGreTunnel(TunnelOptions options, FileDescriptor tun, FileDescriptor socket, FileDescriptor wake)
    {
        Options = options;
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

    /// <summary>A snapshot of the counters; the loops go on counting.</summary>
    public TunnelCounters Counters => new()
    {
        TxPackets = Volatile.Read(ref _tx.Packets),
        TxBytes = Volatile.Read(ref _tx.Bytes),
        TxErrors = Volatile.Read(ref _tx.Errors),
        TxTooBig = Volatile.Read(ref _tx.TooBig),
        TxDropped = Volatile.Read(ref _tx.Dropped),
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
        var (tun, socket, wake) = options.NetworkNamespace is { } ns
            ? await NetworkNamespaceEntry.RunAsync(ns, () => OpenDescriptors(options)).ConfigureAwait(false)
            : OpenDescriptors(options);
        var tunnel = new UserspaceGreTunnel(options, tun, socket, wake);
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

    private static unsafe (FileDescriptor Tun, FileDescriptor Socket, FileDescriptor Wake) OpenDescriptors(TunnelOptions options)
    {
        var tun = Libc.OpenTun(options.Name);
        FileDescriptor? socket = null;
        try
        {
            socket = OpenSocket(options);
            var wake = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (wake < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"eventfd failed: {Libc.Describe(errno)}.", errno);
            }

            return (tun, socket, new FileDescriptor(wake));
        }
        catch
        {
            socket?.Dispose();
            tun.Dispose();
            throw;
        }
    }

    private static unsafe FileDescriptor OpenSocket(TunnelOptions options)
    {
        var v6 = options.OuterFamily == AddressFamily.InterNetworkV6;
        var fd = Libc.Socket(v6 ? Libc.AF_INET6 : Libc.AF_INET, Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, Libc.IPPROTO_GRE);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new TunnelException($"Could not open a raw GRE socket: {Libc.Describe(errno)}. Run as root or grant CAP_NET_RAW.", errno);
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
            if (Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_RCVBUFFORCE, ReceiveBufferBytes) != 0)
            {
                _ = Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_RCVBUF, ReceiveBufferBytes);
            }

            // A send that waits for buffer space longer than this is dropped and counted, so that stopping never waits on it.
            long* timeout = stackalloc long[2] { 1, 0 };
            _ = Libc.SetSockOpt(fd, Libc.SOL_SOCKET, Libc.SO_SNDTIMEO, timeout, 16);

            // Binding a raw socket sets the source of what it sends and accepts only packets to that address.
            byte* address = stackalloc byte[Libc.SockaddrStorageSize];
            var length = Libc.WriteSockaddr(options.Local, new Span<byte>(address, Libc.SockaddrStorageSize));
            if (Libc.Bind(fd, address, (uint)length) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new TunnelException($"Could not bind the GRE socket to local address {options.Local}: {Libc.Describe(errno)}. " +
                    (errno == Libc.EADDRNOTAVAIL
                        ? $"{options.Local} is not an address of this host" + (options.NetworkNamespace is { } ns ? $" (namespace {ns})" : "") +
                          ": add it to an interface, or give the right Local address."
                        : "Check the Local address."),
                    errno);
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
        var memory = (byte*)NativeMemory.AlignedAlloc(
            (nuint)(BatchSize * (SlotSize + sizeof(MMsgHdr) + sizeof(IoVec)) + Libc.SockaddrStorageSize), 64);
        try
        {
            _tun.DangerousAddRef(ref tunAdded);
            _socket.DangerousAddRef(ref socketAdded);
            int tun = _tun.Value, socket = _socket.Value, wake = _wake.Value;

            var slots = memory;
            var messages = (MMsgHdr*)(slots + BatchSize * SlotSize);
            var iovs = (IoVec*)(messages + BatchSize);
            var remote = (byte*)(iovs + BatchSize);
            var remoteLength = (uint)Libc.WriteSockaddr(Options.Remote, new Span<byte>(remote, Libc.SockaddrStorageSize));
            for (var i = 0; i < BatchSize; i++)
            {
                iovs[i].Base = slots + i * SlotSize;
                messages[i] = default;
                messages[i].Header.Name = remote;
                messages[i].Header.NameLength = remoteLength;
                messages[i].Header.Iov = iovs + i;
                messages[i].Header.IovLength = 1;
            }

            var key = Options.Key;
            var checksum = Options.SendChecksum;
            var sequenced = Options.SendSequenceNumbers;
            var headerLength = Options.GreHeaderLength;
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

                var count = 0;
                while (count < BatchSize)
                {
                    var slot = slots + count * SlotSize;
                    var read = Libc.Read(tun, slot + headerLength, SlotPayload);
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

                    var inner = new Span<byte>(slot + headerLength, (int)read);
                    var protocol = GreCodec.ProtocolOf(inner);
                    if (protocol == 0)
                    {
                        _tx.Dropped++;
                        continue;
                    }

                    var packet = new Span<byte>(slot, headerLength + (int)read);
                    GreCodec.WriteHeader(new GreHeader(protocol, key, sequenced ? sequence++ : null, checksum), packet);
                    iovs[count].Length = (nuint)packet.Length;
                    count++;
                }

                Send(socket, messages, count, headerLength);
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

                // The first message of the rest failed: count it and go on with the next one.
                _tx.Errors++;
                if (errno == Libc.EMSGSIZE)
                {
                    _tx.TooBig++;
                }

                sent++;
                continue;
            }

            for (var i = sent; i < sent + result; i++)
            {
                _tx.Packets++;
                _tx.Bytes += (long)messages[i].Header.Iov->Length - headerLength;
            }

            sent += result;
        }
    }

    private unsafe void ReceiveLoop()
    {
        Exception? fault = null;
        var tunAdded = false;
        var socketAdded = false;
        var memory = (byte*)NativeMemory.AlignedAlloc(
            (nuint)(BatchSize * (SlotSize + sizeof(MMsgHdr) + sizeof(IoVec) + Libc.SockaddrStorageSize + 4)), 64);
        try
        {
            _tun.DangerousAddRef(ref tunAdded);
            _socket.DangerousAddRef(ref socketAdded);
            int tun = _tun.Value, socket = _socket.Value, wake = _wake.Value;

            var slots = memory;
            var messages = (MMsgHdr*)(slots + BatchSize * SlotSize);
            var iovs = (IoVec*)(messages + BatchSize);
            var names = (byte*)(iovs + BatchSize);
            const int NameSize = Libc.SockaddrStorageSize + 4;
            for (var i = 0; i < BatchSize; i++)
            {
                iovs[i].Base = slots + i * SlotSize;
                iovs[i].Length = SlotSize;
                messages[i] = default;
                messages[i].Header.Iov = iovs + i;
                messages[i].Header.IovLength = 1;
                messages[i].Header.Name = names + i * NameSize;
            }

            var v4 = Options.OuterFamily == AddressFamily.InterNetwork;
            var remote = v4 ? _remote.AsSpan(0, 4) : _remote.AsSpan(0, 16);
            var key = Options.Key;
            PollFd* fds = stackalloc PollFd[2];
            fds[0] = new PollFd { Fd = socket, Events = Libc.POLLIN };
            fds[1] = new PollFd { Fd = wake, Events = Libc.POLLIN };
            ResolveNativeCalls(messages);
            var allocated = GC.GetAllocatedBytesForCurrentThread();
            while (WaitReadable(fds, "the GRE socket", out fault))
            {
                for (var i = 0; i < BatchSize; i++)
                {
                    messages[i].Header.NameLength = NameSize;
                    messages[i].Header.Flags = 0;
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

                for (var i = 0; i < count; i++)
                {
                    Deliver(tun, ref messages[i], remote, v4, key);
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

    private unsafe void Deliver(int tun, ref MMsgHdr message, ReadOnlySpan<byte> remote, bool v4, uint? key)
    {
        // The source first: nothing from a stranger is parsed beyond what it takes to count it.
        var name = message.Header.Name;
        var source = v4 ? new ReadOnlySpan<byte>(name + 4, 4) : new ReadOnlySpan<byte>(name + 8, 16);
        if (!source.SequenceEqual(remote))
        {
            _rx.Stray++;
            return;
        }

        if ((message.Header.Flags & Libc.MSG_TRUNC) != 0)
        {
            _rx.Malformed++;
            return;
        }

        var data = new ReadOnlySpan<byte>(message.Header.Iov->Base, (int)message.Length);
        if (v4)
        {
            // An IPv4 raw socket delivers the outer IP header too (an IPv6 one does not).
            var headerLength = data.IsEmpty ? 0 : (data[0] & 0x0F) * 4;
            if (data.IsEmpty || data[0] >> 4 != 4 || headerLength < 20 || headerLength > data.Length)
            {
                _rx.Malformed++;
                return;
            }

            data = data[headerLength..];
        }

        var status = GreCodec.Decode(data, out var header, out var payload);
        if (status != GreDecodeStatus.Ok)
        {
            _rx.Malformed++;
            return;
        }

        if (header.Key != key)
        {
            _rx.WrongKey++;
            return;
        }

        // The TUN device tells IPv4 from IPv6 by the version nibble: it must agree with the GRE protocol type.
        if (GreCodec.ProtocolOf(payload) != header.ProtocolType)
        {
            _rx.Malformed++;
            return;
        }

        fixed (byte* inner = payload)
        {
            if (Libc.Write(tun, inner, (nuint)payload.Length) < 0)
            {
                _rx.Errors++;
                return;
            }
        }

        _rx.Packets++;
        _rx.Bytes += payload.Length;
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
        _ = Marshal.GetLastPInvokeError();
    }

    /// <summary>Blocks until the descriptor is readable (true) or the eventfd asks to stop or the descriptor failed (false).</summary>
    private static unsafe bool WaitReadable(PollFd* fds, string what, out Exception? fault)
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
#pragma warning disable CA1823, IDE0051, CS0169 // Padding.
        private readonly long _padAfter0, _padAfter1, _padAfter2, _padAfter3, _padAfter4, _padAfter5, _padAfter6, _padAfter7;
#pragma warning restore CA1823, IDE0051, CS0169
    }
}
