using System.Buffers;
using System.Buffers.Text;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab;

/// <summary>The server closed the connection before a complete response had arrived.</summary>
/// <param name="beforeAnyByte">Nothing of the response had arrived: the connection ended before it began.</param>
internal sealed class HttpEndOfStreamException(string message, bool beforeAnyByte = false) : Exception(message)
{
    public bool BeforeAnyByte { get; } = beforeAnyByte;
}

/// <summary>The response is not valid HTTP/1.1 (or is beyond this reader's limits).</summary>
internal sealed class HttpProtocolException(string message) : Exception(message);

/// <summary>
/// Reads HTTP/1.1 responses from one connection: status line, headers (names matched case-insensitively), and a body
/// framed by Content-Length, chunked transfer coding, or the end of the connection. Interim 1xx responses are skipped.
/// Buffers come from the shared pool and are reused from response to response; bytes past the end of a response stay
/// buffered for the next one. One instance per connection at a time; not thread-safe.
/// </summary>
internal sealed class HttpResponseReader : IDisposable
{
    internal const int MaxHeaderBytes = 64 * 1024;
    internal const int MaxBodyBytes = 16 * 1024 * 1024;
    private const int MaxChunkLineBytes = 1024;

    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
    private int _start;
    private int _end;
    private byte[] _body = ArrayPool<byte>.Shared.Rent(4 * 1024);
    private int _bodyLength;

    private enum Framing
    {
        None,
        ContentLength,
        Chunked,
        UntilClose,
    }

    public int StatusCode { get; private set; }

    /// <summary>The server will close the connection after this response (or already did, for a close-delimited body).</summary>
    public bool ConnectionClose { get; private set; }

    public ReadOnlySpan<byte> Body => _body.AsSpan(0, _bodyLength);

    /// <summary>Whether any byte of the response being read has arrived (or is left over from the previous one).</summary>
    public bool HasPendingBytes => _end > _start;

    /// <summary>Forgets buffered bytes: call when the reader moves to a new connection.</summary>
    public void Reset()
    {
        _start = 0;
        _end = 0;
    }

    /// <summary>Reads one complete response.</summary>
    /// <exception cref="HttpEndOfStreamException">The connection ended first.</exception>
    /// <exception cref="HttpProtocolException">The response is malformed.</exception>
    public async ValueTask ReadAsync(Socket socket, CancellationToken cancellationToken)
    {
        _bodyLength = 0;
        Framing framing;
        long contentLength;
        while (true)
        {
            var headerLength = await ReadHeaderAsync(socket, cancellationToken).ConfigureAwait(false);
            (framing, contentLength) = ParseHeader(_buffer.AsSpan(_start, headerLength));
            _start += headerLength;
            if (StatusCode is < 100 or >= 200 or 101)
            {
                break;
            }
        }

        switch (framing)
        {
            case Framing.ContentLength:
                await ReadFixedBodyAsync(socket, (int)contentLength, cancellationToken).ConfigureAwait(false);
                break;
            case Framing.Chunked:
                await ReadChunkedBodyAsync(socket, cancellationToken).ConfigureAwait(false);
                break;
            case Framing.UntilClose:
                await ReadBodyUntilCloseAsync(socket, cancellationToken).ConfigureAwait(false);
                break;
            case Framing.None:
            default:
                break;
        }

        if (_start == _end)
        {
            _start = 0;
            _end = 0;
        }
    }

    public void Dispose()
    {
        ArrayPool<byte>.Shared.Return(_buffer);
        ArrayPool<byte>.Shared.Return(_body);
        _buffer = [];
        _body = [];
    }

    private static int ParseStatusCode(ReadOnlySpan<byte> statusLine)
    {
        // HTTP/1.x SSS[ reason]
        if (statusLine.Length < 12 || !statusLine.StartsWith("HTTP/1."u8) || statusLine[8] != ' '
            || (statusLine.Length > 12 && statusLine[12] != ' ')
            || !Utf8Parser.TryParse(statusLine.Slice(9, 3), out int status, out var consumed) || consumed != 3 || status < 100)
        {
            throw new HttpProtocolException($"malformed status line '{Printable(statusLine)}'");
        }

        return status;
    }

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        var text = Encoding.ASCII.GetString(bytes[..Math.Min(bytes.Length, 100)]);
        return string.Create(text.Length, text, static (span, source) =>
        {
            for (var i = 0; i < source.Length; i++)
            {
                span[i] = source[i] is >= ' ' and < (char)0x7f ? source[i] : '?';
            }
        });
    }

    private (Framing Framing, long ContentLength) ParseHeader(ReadOnlySpan<byte> header)
    {
        var lineEnd = header.IndexOf("\r\n"u8);
        var statusLine = header[..lineEnd];
        StatusCode = ParseStatusCode(statusLine);
        var http10 = statusLine[7] == (byte)'0';
        var closeToken = false;
        var keepAliveToken = false;
        var transferEncoding = false;
        var chunked = false;
        long contentLength = -1;

        var rest = header[(lineEnd + 2)..];
        while (true)
        {
            lineEnd = rest.IndexOf("\r\n"u8);
            var line = rest[..lineEnd];
            rest = rest[(lineEnd + 2)..];
            if (line.IsEmpty)
            {
                break;
            }

            var colon = line.IndexOf((byte)':');
            if (colon <= 0)
            {
                throw new HttpProtocolException($"malformed header line '{Printable(line)}'");
            }

            var name = line[..colon];
            var value = line[(colon + 1)..];
            value = value[Ascii.Trim(value)];
            if (Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
            {
                if (!Utf8Parser.TryParse(value, out long length, out var consumed) || consumed != value.Length || length < 0
                    || (contentLength >= 0 && contentLength != length))
                {
                    throw new HttpProtocolException($"invalid Content-Length '{Printable(value)}'");
                }

                contentLength = length;
            }
            else if (Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
            {
                // Chunked must be the last coding applied; anything else is delimited by the end of the connection.
                transferEncoding = true;
                var lastComma = value.LastIndexOf((byte)',');
                var last = value[(lastComma + 1)..];
                chunked = Ascii.EqualsIgnoreCase(last[Ascii.Trim(last)], "chunked"u8);
            }
            else if (Ascii.EqualsIgnoreCase(name, "Connection"u8))
            {
                foreach (var range in value.Split((byte)','))
                {
                    var token = value[range];
                    token = token[Ascii.Trim(token)];
                    closeToken |= Ascii.EqualsIgnoreCase(token, "close"u8);
                    keepAliveToken |= Ascii.EqualsIgnoreCase(token, "keep-alive"u8);
                }
            }
        }

        ConnectionClose = closeToken || (http10 && !keepAliveToken);
        if (StatusCode is < 200 or 204 or 304)
        {
            return (Framing.None, 0);
        }

        if (transferEncoding)
        {
            if (chunked)
            {
                return (Framing.Chunked, 0);
            }

            ConnectionClose = true;
            return (Framing.UntilClose, 0);
        }

        if (contentLength >= 0)
        {
            if (contentLength > MaxBodyBytes)
            {
                throw new HttpProtocolException($"Content-Length {contentLength} is over this reader's limit of {MaxBodyBytes} bytes");
            }

            return (Framing.ContentLength, contentLength);
        }

        ConnectionClose = true;
        return (Framing.UntilClose, 0);
    }

    /// <summary>Returns the length of the header block, up to and including the empty line; it starts at <see cref="_start"/>.</summary>
    private async ValueTask<int> ReadHeaderAsync(Socket socket, CancellationToken cancellationToken)
    {
        var searched = 0; // bytes after _start already known not to begin "\r\n\r\n"
        while (true)
        {
            var index = _buffer.AsSpan(_start + searched, _end - _start - searched).IndexOf("\r\n\r\n"u8);
            if (index >= 0)
            {
                return searched + index + 4;
            }

            searched = Math.Max(0, _end - _start - 3);
            if (_end - _start >= MaxHeaderBytes)
            {
                throw new HttpProtocolException($"response header is over {MaxHeaderBytes} bytes");
            }

            await FillAsync(socket, "the response header", cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask ReadFixedBodyAsync(Socket socket, int length, CancellationToken cancellationToken)
    {
        EnsureBodyCapacity(length);
        var buffered = Math.Min(_end - _start, length);
        _buffer.AsSpan(_start, buffered).CopyTo(_body);
        _start += buffered;
        _bodyLength = buffered;
        while (_bodyLength < length)
        {
            var received = await socket.ReceiveAsync(_body.AsMemory(_bodyLength, length - _bodyLength), SocketFlags.None, cancellationToken)
                .ConfigureAwait(false);
            if (received == 0)
            {
                throw new HttpEndOfStreamException(
                    $"connection closed after {_bodyLength} of {length} body bytes (status {StatusCode})");
            }

            _bodyLength += received;
        }
    }

    private async ValueTask ReadChunkedBodyAsync(Socket socket, CancellationToken cancellationToken)
    {
        while (true)
        {
            var lineLength = await ReadLineAsync(socket, MaxChunkLineBytes, "a chunk header", cancellationToken).ConfigureAwait(false);
            var line = _buffer.AsSpan(_start, lineLength);
            var semicolon = line.IndexOf((byte)';');
            var sizeText = semicolon >= 0 ? line[..semicolon] : line;
            sizeText = sizeText[Ascii.Trim(sizeText)];
            if (!Utf8Parser.TryParse(sizeText, out long size, out var consumed, 'X') || consumed != sizeText.Length || sizeText.IsEmpty)
            {
                throw new HttpProtocolException($"invalid chunk size line '{Printable(line)}'");
            }

            _start += lineLength + 2;
            if (size == 0)
            {
                break;
            }

            if (_bodyLength + size > MaxBodyBytes)
            {
                throw new HttpProtocolException($"chunked body is over this reader's limit of {MaxBodyBytes} bytes");
            }

            var chunkEnd = _bodyLength + (int)size;
            EnsureBodyCapacity(chunkEnd);
            var buffered = Math.Min(_end - _start, (int)size);
            _buffer.AsSpan(_start, buffered).CopyTo(_body.AsSpan(_bodyLength));
            _start += buffered;
            _bodyLength += buffered;
            while (_bodyLength < chunkEnd)
            {
                var received = await socket.ReceiveAsync(_body.AsMemory(_bodyLength, chunkEnd - _bodyLength), SocketFlags.None, cancellationToken)
                    .ConfigureAwait(false);
                if (received == 0)
                {
                    throw new HttpEndOfStreamException($"connection closed in the middle of a chunk (status {StatusCode})");
                }

                _bodyLength += received;
            }

            while (_end - _start < 2)
            {
                await FillAsync(socket, "the end of a chunk", cancellationToken).ConfigureAwait(false);
            }

            if (_buffer[_start] != '\r' || _buffer[_start + 1] != '\n')
            {
                throw new HttpProtocolException("chunk data is not followed by CRLF");
            }

            _start += 2;
        }

        // Trailer fields, if any, up to the empty line.
        while (true)
        {
            var lineLength = await ReadLineAsync(socket, MaxHeaderBytes, "the chunked trailer", cancellationToken).ConfigureAwait(false);
            _start += lineLength + 2;
            if (lineLength == 0)
            {
                return;
            }
        }
    }

    private async ValueTask ReadBodyUntilCloseAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffered = _end - _start;
        EnsureBodyCapacity(buffered);
        _buffer.AsSpan(_start, buffered).CopyTo(_body);
        _bodyLength = buffered;
        _start = _end;
        while (true)
        {
            if (_bodyLength == _body.Length)
            {
                if (_bodyLength >= MaxBodyBytes)
                {
                    throw new HttpProtocolException($"close-delimited body is over this reader's limit of {MaxBodyBytes} bytes");
                }

                EnsureBodyCapacity(_bodyLength + 1);
            }

            var received = await socket.ReceiveAsync(_body.AsMemory(_bodyLength), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (received == 0)
            {
                return;
            }

            _bodyLength += received;
        }
    }

    /// <summary>Returns the length of the next line, without its CRLF; it starts at <see cref="_start"/>.</summary>
    private async ValueTask<int> ReadLineAsync(Socket socket, int maxLength, string what, CancellationToken cancellationToken)
    {
        var searched = 0;
        while (true)
        {
            var index = _buffer.AsSpan(_start + searched, _end - _start - searched).IndexOf("\r\n"u8);
            if (index >= 0)
            {
                return searched + index;
            }

            searched = Math.Max(0, _end - _start - 1);
            if (_end - _start > maxLength)
            {
                throw new HttpProtocolException($"{what} is over {maxLength} bytes");
            }

            await FillAsync(socket, what, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Receives more bytes after <see cref="_end"/>, making room first by compacting or growing the buffer.</summary>
    private async ValueTask FillAsync(Socket socket, string what, CancellationToken cancellationToken)
    {
        if (_end == _buffer.Length)
        {
            if (_start > 0)
            {
                _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
                _end -= _start;
                _start = 0;
            }
            else
            {
                var larger = ArrayPool<byte>.Shared.Rent(_buffer.Length * 2);
                _buffer.AsSpan(0, _end).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = larger;
            }
        }

        var received = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken).ConfigureAwait(false);
        if (received == 0)
        {
            var beforeAnyByte = _end == _start && what == "the response header" && _bodyLength == 0;
            throw new HttpEndOfStreamException(beforeAnyByte
                ? "connection closed before any byte of the response arrived"
                : $"connection closed while reading {what}", beforeAnyByte);
        }

        _end += received;
    }

    private void EnsureBodyCapacity(int length)
    {
        if (length <= _body.Length)
        {
            return;
        }

        var larger = ArrayPool<byte>.Shared.Rent(Math.Min(Math.Max(length, _body.Length * 2), MaxBodyBytes));
        _body.AsSpan(0, _bodyLength).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(_body);
        _body = larger;
    }
}
