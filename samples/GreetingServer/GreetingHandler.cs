using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Connections;

namespace Switchover.Samples;

/// <summary>
/// Greets each client with the address it sees ("220 TEXT ready, you are 198.51.100.10:40000"), then answers lines:
/// <c>ECHO text</c>, <c>BULK n</c> (n bytes of data, then a line), <c>CONNECT ip port from src</c> (opens an outbound
/// TCP connection from address src and reports the peer's first line), <c>QUIT</c>.
/// </summary>
internal sealed partial class GreetingHandler(IConfiguration configuration, ILogger<GreetingHandler> logger) : ConnectionHandler
{
    private const int MaxLine = 1024;
    private const int MaxBulk = 64 * 1024 * 1024;

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var text = configuration["Text"] ?? "switchover";
        var input = connection.Transport.Input;
        var output = connection.Transport.Output;
        var client = connection.RemoteEndPoint is IPEndPoint { Address.IsIPv4MappedToIPv6: true } mapped
            ? new IPEndPoint(mapped.Address.MapToIPv4(), mapped.Port)
            : connection.RemoteEndPoint;
        await WriteLineAsync(output, $"220 {text} ready, you are {client}");
        while (true)
        {
            var line = await ReadLineAsync(input, connection.ConnectionClosed);
            if (line is null)
            {
                return;
            }

            var words = line.Split(' ', 2);
            switch (words[0].ToUpperInvariant())
            {
                case "ECHO":
                    await WriteLineAsync(output, "250 " + (words.Length > 1 ? words[1] : string.Empty));
                    break;
                case "BULK" when words.Length > 1 && int.TryParse(words[1], CultureInfo.InvariantCulture, out var size) && size is >= 0 and <= MaxBulk:
                    await WriteBulkAsync(output, size);
                    await WriteLineAsync(output, $"250 sent {size} bytes");
                    break;
                case "CONNECT":
                    await WriteLineAsync(output, await ConnectOutAsync(words.Length > 1 ? words[1] : string.Empty, connection.ConnectionClosed));
                    break;
                case "QUIT":
                    await WriteLineAsync(output, "221 bye");
                    return;
                default:
                    await WriteLineAsync(output, "500 unknown command; try ECHO, BULK n, CONNECT ip port from src, QUIT");
                    break;
            }
        }
    }

    /// <summary>"ip port from src": an outbound connection whose source is src (e.g. the moved address).</summary>
    private async Task<string> ConnectOutAsync(string arguments, CancellationToken cancellationToken)
    {
        var parts = arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 4 || parts[2] != "from" || !IPAddress.TryParse(parts[0], out var target) || !int.TryParse(parts[1], CultureInfo.InvariantCulture, out var port)
            || !IPAddress.TryParse(parts[3], out var source))
        {
            return "501 usage: CONNECT ip port from src";
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            using var socket = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(source, 0));
            await socket.ConnectAsync(new IPEndPoint(target, port), timeout.Token);
            var buffer = new byte[MaxLine];
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            return $"250 connected from {socket.LocalEndPoint} to {socket.RemoteEndPoint}: {Encoding.ASCII.GetString(buffer, 0, read).TrimEnd()}";
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            OutboundFailed(logger, target, port, source, e.Message);
            return $"451 outbound connection failed: {e.Message}";
        }
    }

    private static async Task WriteBulkAsync(PipeWriter output, int size)
    {
        for (var sent = 0; sent < size;)
        {
            var chunk = Math.Min(16 * 1024, size - sent);
            var memory = output.GetMemory(chunk)[..chunk];
            for (var i = 0; i < chunk; i++)
            {
                memory.Span[i] = (byte)('a' + ((sent + i) % 26));
            }

            output.Advance(chunk);
            sent += chunk;
            await output.FlushAsync();
        }
    }

    private static async Task WriteLineAsync(PipeWriter output, string line)
    {
        await output.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"));
    }

    private static async Task<string?> ReadLineAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return null;
            }

            var buffer = result.Buffer;
            var newline = buffer.PositionOf((byte)'\n');
            if (newline is { } end)
            {
                var line = Encoding.ASCII.GetString(buffer.Slice(0, end)).TrimEnd('\r');
                input.AdvanceTo(buffer.GetPosition(1, end));
                return line;
            }

            if (result.IsCompleted || buffer.Length > MaxLine)
            {
                input.AdvanceTo(buffer.End);
                return null;
            }

            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    [LoggerMessage(1, LogLevel.Warning, "Outbound connection to {Target}:{Port} from {Source} failed: {Error}")]
    private static partial void OutboundFailed(ILogger logger, IPAddress target, int port, IPAddress source, string error);
}
