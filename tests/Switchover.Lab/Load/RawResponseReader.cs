using System.Buffers;
using System.Net.Sockets;

namespace Switchover.Lab;

/// <summary>
/// Reads terminator-delimited responses (lines, by default) from one connection of a raw TCP protocol. Bytes past the
/// end of a response stay buffered for the next one. One instance per connection at a time; not thread-safe.
/// </summary>
internal sealed class RawResponseReader : IDisposable
{
    internal const int MaxResponseBytes = 64 * 1024;

    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(4 * 1024);
    private int _start;
    private int _end;
    private int _responseStart;
    private int _responseLength;

    /// <summary>
    /// The last response, without its terminator (and, for a '\n' terminator, without the '\r' before it). Valid until
    /// the next read.
    /// </summary>
    public ReadOnlySpan<byte> Response => _buffer.AsSpan(_responseStart, _responseLength);

    /// <summary>Forgets buffered bytes: call when the reader moves to a new connection.</summary>
    public void Reset()
    {
        _start = 0;
        _end = 0;
        _responseLength = 0;
    }

    /// <summary>Reads one response: the bytes up to the next <paramref name="terminator"/>, which is consumed.</summary>
    /// <exception cref="HttpEndOfStreamException">The connection ended first.</exception>
    /// <exception cref="HttpProtocolException">No terminator within <see cref="MaxResponseBytes"/>.</exception>
    public async ValueTask ReadAsync(Socket socket, byte terminator, CancellationToken cancellationToken)
    {
        _responseLength = 0;
        while (true)
        {
            var index = _buffer.AsSpan(_start, _end - _start).IndexOf(terminator);
            if (index >= 0)
            {
                _responseStart = _start;
                _responseLength = index;
                if (terminator == (byte)'\n' && index > 0 && _buffer[_start + index - 1] == (byte)'\r')
                {
                    _responseLength--;
                }

                _start += index + 1;
                return;
            }

            if (_end - _start >= MaxResponseBytes)
            {
                throw new HttpProtocolException($"no response terminator (byte {terminator}) within {MaxResponseBytes} bytes");
            }

            MakeRoom();
            var read = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                throw new HttpEndOfStreamException(_end > _start
                    ? $"connection closed after {_end - _start} bytes of the response, before its terminator"
                    : "connection closed before any byte of the response arrived");
            }

            _end += read;
        }
    }

    public void Dispose()
    {
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
    }

    private void MakeRoom()
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }

        if (_end == _buffer.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Min(_buffer.Length * 2, MaxResponseBytes + 1));
            _buffer.AsSpan(0, _end).CopyTo(larger);
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = larger;
        }
    }
}
