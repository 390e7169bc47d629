using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Switchover.Interop;

namespace Switchover.Agent;

/// <summary>
/// One agent connection: JSON lines over a Unix stream socket, read with recvmsg so that a descriptor sent with a
/// line (SCM_RIGHTS) is received with it. Synchronous with deadlines: each side handles one request at a time.
/// </summary>
internal sealed class LineConnection(Socket socket) : IDisposable
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private readonly MemoryStream _pending = new();

    public Socket Socket { get; } = socket;

    /// <summary>
    /// Reads the next line (without its newline), or null when the peer closed first. Descriptors that arrive on the way
    /// are added to <paramref name="descriptors"/>; the caller owns them (and must close them when it wants none).
    /// </summary>
    public byte[]? ReadLine(TimeSpan timeout, List<int> descriptors)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            if (TakeLine() is { } line)
            {
                return line;
            }

            var remaining = timeout - stopwatch.Elapsed;
            if (remaining <= TimeSpan.Zero)
            {
                throw new TimeoutException($"No complete request or reply within {timeout.TotalSeconds:0.#} s.");
            }

            Span<Libc.PollDescriptor> fds = [new() { Fd = (int)Socket.SafeHandle.DangerousGetHandle(), Events = Libc.POLLIN }];
            var ready = Libc.Poll(fds, (int)Math.Ceiling(remaining.TotalMilliseconds));
            if (ready < 0 && -ready != Libc.EINTR)
            {
                throw new IOException($"poll on the agent connection failed (errno {-ready}).");
            }

            if (ready <= 0)
            {
                continue;
            }

            var received = Libc.ReceiveWithDescriptors(Socket.SafeHandle, _buffer, descriptors);
            if (received == 0)
            {
                return null;
            }

            if (received > 0)
            {
                _pending.Write(_buffer, 0, received);
                if (_pending.Length > AgentProtocol.MaxLine)
                {
                    throw new InvalidDataException($"A line longer than {AgentProtocol.MaxLine} bytes: not the agent protocol.");
                }
            }
        }
    }

    public void Write(byte[] line) => Socket.Send(line);

    /// <summary>Sends a line with a descriptor attached to its bytes.</summary>
    public void Write(byte[] line, SafeHandle descriptor)
    {
        var sent = Libc.SendWithDescriptor(Socket.SafeHandle, line, descriptor);
        if (sent < line.Length)
        {
            Socket.Send(line.AsSpan(sent));
        }
    }

    public void Dispose()
    {
        Socket.Dispose();
        _pending.Dispose();
    }

    private byte[]? TakeLine()
    {
        var bytes = _pending.GetBuffer().AsSpan(0, (int)_pending.Length);
        var newline = bytes.IndexOf((byte)'\n');
        if (newline < 0)
        {
            return null;
        }

        var line = bytes[..newline].ToArray();
        var rest = bytes[(newline + 1)..].ToArray();
        _pending.SetLength(0);
        _pending.Write(rest);
        return line;
    }
}
