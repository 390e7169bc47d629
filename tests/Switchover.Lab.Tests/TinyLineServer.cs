using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab.Tests;

/// <summary>What <see cref="TinyLineServer"/> does with each request line.</summary>
public enum LineServerBehavior
{
    /// <summary>Answers "echo: LINE\r\n", written one byte at a time so the response arrives in pieces.</summary>
    Echo,

    /// <summary>Answers "wrong\r\n".</summary>
    WrongAnswer,

    /// <summary>Answers with half a line, then closes (FIN).</summary>
    CloseMidResponse,

    /// <summary>Reads the line, then resets the connection.</summary>
    Reset,

    /// <summary>Reads the line and never answers.</summary>
    NeverRespond,

    /// <summary>Echoes, and closes after every second answer.</summary>
    CloseEverySecondResponse,
}

/// <summary>
/// A line-oriented TCP server for the raw-TCP tests, on [::]:0 inside a namespace (dual stack). It may greet each
/// connection with a line first, as SMTP does.
/// </summary>
internal sealed class TinyLineServer : TinyServer
{
    private readonly LineServerBehavior _behavior;
    private readonly string? _greeting;
    private long _requests;

    private TinyLineServer(NetworkNamespace ns, LineServerBehavior behavior, string? greeting)
        : base(ns)
    {
        _behavior = behavior;
        _greeting = greeting;
        StartAccepting();
    }

    public long Requests => Interlocked.Read(ref _requests);

    public static TinyLineServer Start(NetworkNamespace ns, LineServerBehavior behavior = LineServerBehavior.Echo, string? greeting = null) =>
        new(ns, behavior, greeting);

    protected override async Task ServeAsync(Socket connection)
    {
        var buffer = new byte[4096];
        var length = 0;
        var served = 0;
        var keep = false;
        try
        {
            if (_greeting is not null)
            {
                await connection.SendAsync(Encoding.ASCII.GetBytes(_greeting + "\r\n"), SocketFlags.None);
            }

            while (!Stopping.IsCancellationRequested)
            {
                var end = buffer.AsSpan(0, length).IndexOf((byte)'\n');
                if (end < 0)
                {
                    var received = await connection.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, Stopping);
                    if (received == 0)
                    {
                        return;
                    }

                    length += received;
                    continue;
                }

                var line = Encoding.ASCII.GetString(buffer, 0, end).TrimEnd('\r');
                buffer.AsSpan(end + 1, length - end - 1).CopyTo(buffer);
                length -= end + 1;
                Interlocked.Increment(ref _requests);
                served++;
                switch (_behavior)
                {
                    case LineServerBehavior.WrongAnswer:
                        await connection.SendAsync("wrong\r\n"u8.ToArray(), SocketFlags.None);
                        break;
                    case LineServerBehavior.CloseMidResponse:
                        await connection.SendAsync("echo: "u8.ToArray(), SocketFlags.None);
                        connection.Shutdown(SocketShutdown.Both);
                        return;
                    case LineServerBehavior.Reset:
                        connection.LingerState = new LingerOption(true, 0);
                        return;
                    case LineServerBehavior.NeverRespond:
                        keep = true;
                        Hold(connection);

                        return;
                    default:
                        foreach (var b in Encoding.ASCII.GetBytes($"echo: {line}\r\n"))
                        {
                            await connection.SendAsync(new[] { b }, SocketFlags.None);
                        }

                        if (_behavior == LineServerBehavior.CloseEverySecondResponse && served % 2 == 0)
                        {
                            connection.Shutdown(SocketShutdown.Send);
                            return;
                        }

                        break;
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // The client went away or the server is stopping.
        }
        finally
        {
            if (!keep)
            {
                connection.Dispose();
            }
        }
    }
}
