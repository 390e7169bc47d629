using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Switchover.Interop;

/// <summary>
/// A netlink socket (AF_NETLINK, SOCK_RAW) and the request/dump exchange on it (netlink(7)). The message layouts
/// of each family live with the family: <see cref="Netfilter.CtNetlink"/> (ctnetlink), <see cref="Sockets.SockDiag"/>.
/// </summary>
internal sealed partial class NetlinkSocket : IDisposable
{
    public const int NetlinkSockDiag = 4;
    public const int NetlinkNetfilter = 12;

    public const ushort NlmsgError = 2;
    public const ushort NlmsgDone = 3;
    public const ushort NlmFRequest = 0x1;
    public const ushort NlmFMulti = 0x2;
    public const ushort NlmFAck = 0x4;
    public const ushort NlmFDump = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH

    /// <summary>sizeof(struct nlmsghdr).</summary>
    public const int HeaderLength = 16;

    private const int AfNetlink = 16;
    private const int SockRaw = 3;
    private const int SockCloexec = 0x80000;
    private const int SolSocket = 1;
    private const int SoRcvtimeo = 20;
    private const int SoSndtimeo = 21;
    private const int MsgDontwait = 0x40;

    // A dump's datagrams are at most 32 KiB (netlink_recvmsg caps max_recvmsg_len there); twice that never truncates.
    private const int ReceiveBufferLength = 64 * 1024;

    private static readonly TimeSpan IoTimeout = TimeSpan.FromSeconds(5);
    private static int s_sequence = Environment.TickCount;

    private readonly SafeDescriptorHandle _fd;
    private byte[]? _buffer;

    private NetlinkSocket(SafeDescriptorHandle fd) => _fd = fd;

    public static unsafe NetlinkSocket Open(int protocol)
    {
        var fd = SocketNative(AfNetlink, SockRaw | SockCloexec, protocol);
        if (fd < 0)
        {
            throw NetlinkException.FromErrno(Marshal.GetLastPInvokeError(), $"socket(AF_NETLINK, {protocol})");
        }

        var socket = new NetlinkSocket(new SafeDescriptorHandle(fd));

        // Bounded I/O: a kernel that never answers fails the call after a few seconds instead of hanging a drain.
        var timeout = stackalloc long[2] { (long)IoTimeout.TotalSeconds, 0 };
        SetSockOptNative(socket._fd, SolSocket, SoRcvtimeo, timeout, 16);
        SetSockOptNative(socket._fd, SolSocket, SoSndtimeo, timeout, 16);
        return socket;
    }

    /// <summary>A sequence number for a request; replies carry it back.</summary>
    public static uint NextSequence() => unchecked((uint)Interlocked.Increment(ref s_sequence));

    /// <summary>
    /// Sends a dump request and hands each answer's type and payload (after the nlmsghdr) to <paramref name="onMessage"/>
    /// until NLMSG_DONE. An NLMSG_ERROR becomes a <see cref="NetlinkException"/>.
    /// </summary>
    public void Dump(ReadOnlySpan<byte> request, NetlinkMessageHandler onMessage, CancellationToken cancellationToken)
    {
        var sequence = BinaryPrimitives.ReadUInt32LittleEndian(request[8..]);
        Send(request);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Walk(Receive(wait: true), sequence, onMessage))
            {
                return;
            }
        }
    }

    /// <summary>Sends one datagram (a request, or a whole nfnetlink batch).</summary>
    public unsafe void Send(ReadOnlySpan<byte> datagram)
    {
        fixed (byte* p = datagram)
        {
            if (SendNative(_fd, p, datagram.Length, 0) < 0)
            {
                throw NetlinkException.FromErrno(Marshal.GetLastPInvokeError(), "send");
            }
        }
    }

    /// <summary>
    /// Receives one datagram into the socket's buffer: waits (up to the socket's 5 s timeout) when <paramref name="wait"/>,
    /// otherwise returns an empty span when nothing is queued.
    /// </summary>
    public unsafe ReadOnlySpan<byte> Receive(bool wait)
    {
        _buffer ??= new byte[ReceiveBufferLength];
        while (true)
        {
            long received;
            fixed (byte* p = _buffer)
            {
                received = ReceiveNative(_fd, p, _buffer.Length, wait ? 0 : MsgDontwait);
            }

            if (received >= 0)
            {
                return _buffer.AsSpan(0, (int)received);
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR)
            {
                continue;
            }

            if (errno == Libc.EWOULDBLOCK && !wait)
            {
                return [];
            }

            throw NetlinkException.FromErrno(errno, errno == Libc.EWOULDBLOCK ? "recv (no answer within 5 s)" : "recv");
        }
    }

    /// <summary>Walks the messages of one datagram; true once the dump is done.</summary>
    internal static bool Walk(ReadOnlySpan<byte> datagram, uint sequence, NetlinkMessageHandler onMessage)
    {
        while (datagram.Length >= HeaderLength)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(datagram);
            if (length < HeaderLength || length > datagram.Length)
            {
                throw new NetlinkException(0, $"netlink: a message of {length} bytes in a datagram of {datagram.Length}");
            }

            var type = BinaryPrimitives.ReadUInt16LittleEndian(datagram[4..]);
            var seq = BinaryPrimitives.ReadUInt32LittleEndian(datagram[8..]);
            var payload = datagram[HeaderLength..length];
            if (seq == sequence)
            {
                switch (type)
                {
                    case NlmsgDone:
                        var status = payload.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(payload) : 0;
                        return status >= 0 ? true : throw NetlinkException.FromErrno(-status, "dump");
                    case NlmsgError:
                        var error = BinaryPrimitives.ReadInt32LittleEndian(payload);
                        return error == 0 ? true : throw NetlinkException.FromErrno(-error, "request");
                    default:
                        onMessage(type, payload);
                        break;
                }
            }

            var aligned = Align(length);
            datagram = aligned >= datagram.Length ? [] : datagram[aligned..];
        }

        return false;
    }

    public static int Align(int length) => (length + 3) & ~3;

    public void Dispose() => _fd.Dispose();

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int SocketNative(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static unsafe partial int SetSockOptNative(SafeDescriptorHandle fd, int level, int name, void* value, int length);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static unsafe partial nint SendNative(SafeDescriptorHandle fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static unsafe partial nint ReceiveNative(SafeDescriptorHandle fd, byte* buffer, nint length, int flags);
}

internal delegate void NetlinkMessageHandler(ushort type, ReadOnlySpan<byte> payload);

/// <summary>A netlink call failed; <see cref="Errno"/> is the kernel's errno (EPERM: not allowed, see the message).</summary>
internal sealed class NetlinkException(int errno, string message) : Exception(message)
{
    public int Errno { get; } = errno;

    public bool NotPermitted => Errno is Libc.EPERM or 13; // EACCES

    public static NetlinkException FromErrno(int errno, string what) =>
        new(errno, $"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
}

/// <summary>A file descriptor this process owns and closes.</summary>
internal sealed class SafeDescriptorHandle : SafeHandle
{
    public SafeDescriptorHandle(int fd)
        : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    protected override bool ReleaseHandle() => Libc.Close(handle.ToInt32()) == 0;
}

/// <summary>
/// Builds one netlink request: the nlmsghdr, the family's fixed header, then attributes (struct nlattr, 4-byte
/// aligned; nested ones closed by <see cref="EndNest"/>). Little-endian host order for the netlink headers; the
/// attribute values are written as each family wants them (ctnetlink: network order).
/// </summary>
internal sealed class NetlinkMessageWriter
{
    private const ushort NlaFNested = 0x8000;

    private readonly List<byte> _bytes = [];
    private readonly Stack<int> _nests = new();

    public NetlinkMessageWriter(ushort type, ushort flags, uint sequence)
    {
        Span<byte> header = stackalloc byte[NetlinkSocket.HeaderLength];
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], type);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], sequence);
        _bytes.AddRange(header);
    }

    public NetlinkMessageWriter Raw(ReadOnlySpan<byte> bytes)
    {
        _bytes.AddRange(bytes);
        Pad();
        return this;
    }

    /// <summary>A whole attribute (header included) as the kernel sent it, e.g. a tuple to ask about again.</summary>
    public NetlinkMessageWriter RawAttribute(ReadOnlySpan<byte> attribute) => Raw(attribute);

    public NetlinkMessageWriter U8(ushort type, byte value) => Attribute(type, [value]);

    public NetlinkMessageWriter U16BigEndian(ushort type, ushort value)
    {
        Span<byte> v = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(v, value);
        return Attribute(type, v);
    }

    public NetlinkMessageWriter U32BigEndian(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(v, value);
        return Attribute(type, v);
    }

    /// <summary>A u32 in host order (what the kernel reads with nla_get_u32).</summary>
    public NetlinkMessageWriter U32(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(v, value);
        return Attribute(type, v);
    }

    public NetlinkMessageWriter BeginNest(ushort type)
    {
        _nests.Push(_bytes.Count);
        AttributeHeader((ushort)(type | NlaFNested), 0);
        return this;
    }

    public NetlinkMessageWriter EndNest()
    {
        var start = _nests.Pop();
        var length = (ushort)(_bytes.Count - start);
        _bytes[start] = (byte)length;
        _bytes[start + 1] = (byte)(length >> 8);
        return this;
    }

    public byte[] ToArray()
    {
        var bytes = _bytes.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, (uint)bytes.Length);
        return bytes;
    }

    private NetlinkMessageWriter Attribute(ushort type, ReadOnlySpan<byte> value)
    {
        AttributeHeader(type, value.Length);
        _bytes.AddRange(value);
        Pad();
        return this;
    }

    private void AttributeHeader(ushort type, int valueLength)
    {
        var length = (ushort)(4 + valueLength);
        _bytes.Add((byte)length);
        _bytes.Add((byte)(length >> 8));
        _bytes.Add((byte)type);
        _bytes.Add((byte)(type >> 8));
    }

    private void Pad()
    {
        while (_bytes.Count % 4 != 0)
        {
            _bytes.Add(0);
        }
    }
}

/// <summary>Iterates the attributes (struct nlattr) of a payload or of a nested attribute.</summary>
internal ref struct NetlinkAttributes(ReadOnlySpan<byte> span)
{
    private ReadOnlySpan<byte> _rest = span;

    /// <summary>The attribute type without the NLA_F_NESTED and NLA_F_NET_BYTEORDER bits.</summary>
    public ushort Type { get; private set; }

    public ReadOnlySpan<byte> Value { get; private set; }

    /// <summary>The whole current attribute: header and value, without padding.</summary>
    public ReadOnlySpan<byte> Whole { get; private set; }

    public bool MoveNext()
    {
        if (_rest.Length < 4)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt16LittleEndian(_rest);
        if (length < 4 || length > _rest.Length)
        {
            return false;
        }

        Type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(_rest[2..]) & 0x3fff);
        Value = _rest[4..length];
        Whole = _rest[..length];
        var aligned = NetlinkSocket.Align(length);
        _rest = aligned >= _rest.Length ? [] : _rest[aligned..];
        return true;
    }
}
