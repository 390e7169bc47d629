using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Hosting.Systemd;

namespace Switchover.Tests;

/// <summary>
/// A stand-in for systemd's notification socket: an AF_UNIX datagram socket bound in a temporary directory, whose
/// path a test gives the code under test as NOTIFY_SOCKET, and whose datagrams it reads back.
/// </summary>
internal sealed class NotifySocket : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("switchover-notify-").FullName;
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);

    public NotifySocket()
    {
        Path = System.IO.Path.Combine(_directory, "notify");
        _socket.Bind(new UnixDomainSocketEndPoint(Path));
    }

    public string Path { get; }

    /// <summary>
    /// The real notifier of Microsoft.Extensions.Hosting.Systemd, made while NOTIFY_SOCKET names this socket (it reads
    /// the variable once, when it is made); the variable is put back at once. Tests that do this are in the
    /// <see cref="NotifySocketTestGroup"/>, which runs alone, so no other test sees the variable.
    /// </summary>
    public ISystemdNotifier CreateNotifier() => WithNotifySocket(Path, () => new SystemdNotifier());

    /// <summary>The notifier a process gets without NOTIFY_SOCKET (outside systemd).</summary>
    public static ISystemdNotifier CreateNotifierOutsideSystemd() => WithNotifySocket(null, () => new SystemdNotifier());

    public static T WithNotifySocket<T>(string? path, Func<T> action)
    {
        var before = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        Environment.SetEnvironmentVariable("NOTIFY_SOCKET", path);
        try
        {
            return action();
        }
        finally
        {
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", before);
        }
    }

    /// <summary>As <see cref="WithNotifySocket{T}"/>, for code that reads NOTIFY_SOCKET anywhere in an asynchronous run.</summary>
    public static async Task<T> WithNotifySocketAsync<T>(string? path, Func<Task<T>> action)
    {
        var before = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        Environment.SetEnvironmentVariable("NOTIFY_SOCKET", path);
        try
        {
            return await action();
        }
        finally
        {
            Environment.SetEnvironmentVariable("NOTIFY_SOCKET", before);
        }
    }

    /// <summary>Every datagram that arrives within <paramref name="quiet"/> of the previous one (or of the call).</summary>
    public IReadOnlyList<string> Received(TimeSpan? quiet = null)
    {
        var messages = new List<string>();
        var buffer = new byte[65536];
        _socket.ReceiveTimeout = (int)(quiet ?? TimeSpan.FromMilliseconds(300)).TotalMilliseconds;
        while (true)
        {
            try
            {
                var length = _socket.Receive(buffer);
                messages.Add(Encoding.UTF8.GetString(buffer, 0, length));
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock)
            {
                return messages;
            }
        }
    }

    /// <summary>A datagram as its assignments, in order ("READY=1\nMAINPID=7" -> READY=1, MAINPID=7).</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> Fields(string message) =>
        [.. message.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=', 2)).Select(p => KeyValuePair.Create(p[0], p[1]))];

    public void Dispose()
    {
        _socket.Dispose();
        if (Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }
    }
}

/// <summary>Tests that set NOTIFY_SOCKET in the process environment run alone, after the others.</summary>
[CollectionDefinition(nameof(NotifySocketTestGroup), DisableParallelization = true)]
public sealed class NotifySocketTestGroup;
