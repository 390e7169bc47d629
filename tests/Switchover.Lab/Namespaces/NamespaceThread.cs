using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Switchover.Lab;

/// <summary>
/// A dedicated thread that has joined a network namespace with setns(2) and creates sockets there on request.
/// A socket belongs to the namespace it was created in for its whole life, so the sockets handed out can be used
/// from any thread. The thread is never given to a pool: no other code may ever run on it.
/// </summary>
internal sealed class NamespaceThread : IDisposable
{
    // Sockets made ahead of demand for CreateSocketAsync: a hop to this thread and back costs tens of microseconds,
    // as much as a whole request on a fast connection, so a refill is asked for before the stock runs out.
    private const int StockSize = 64;

    private readonly BlockingCollection<SocketRequest> _requests = new(new ConcurrentQueue<SocketRequest>());
    private readonly ConcurrentDictionary<SocketKind, Stock> _stocks = new();
    private readonly Thread _thread;

    private NamespaceThread(string namespaceName)
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "netns " + namespaceName };
    }

    /// <summary>Starts the thread and returns once it is inside the namespace.</summary>
    public static NamespaceThread Start(string namespaceName, string namespacePath)
    {
        var thread = new NamespaceThread(namespaceName);
        var joined = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        thread._thread.Start((namespacePath, joined));
        try
        {
            joined.Task.GetAwaiter().GetResult();
        }
        catch
        {
            thread.Dispose();
            throw;
        }

        return thread;
    }

    public Socket CreateSocket(AddressFamily family, SocketType type, ProtocolType protocol)
    {
        var request = new SocketRequest(family, type, protocol);
        try
        {
            _requests.Add(request);
        }
        catch (InvalidOperationException e)
        {
            throw new ObjectDisposedException("The network namespace has been disposed.", e);
        }

        return request.Completion.Task.GetAwaiter().GetResult();
    }

    public Task<Socket> CreateSocketAsync(AddressFamily family, SocketType type, ProtocolType protocol)
    {
        var kind = new SocketKind(family, type, protocol);
        var stock = _stocks.GetOrAdd(kind, static _ => new Stock());
        if (stock.Sockets.TryDequeue(out var socket))
        {
            if (stock.Sockets.Count < StockSize / 2 && Interlocked.Exchange(ref stock.RefillPending, 1) == 0)
            {
                try
                {
                    _requests.Add(new SocketRequest(family, type, protocol, refillOnly: true));
                }
                catch (InvalidOperationException)
                {
                    // Disposed meanwhile; the socket in hand is still good.
                }
            }

            return Task.FromResult(socket);
        }

        var request = new SocketRequest(family, type, protocol, refill: true);
        try
        {
            _requests.Add(request);
        }
        catch (InvalidOperationException e)
        {
            return Task.FromException<Socket>(new ObjectDisposedException("The network namespace has been disposed.", e));
        }

        return request.Completion.Task;
    }

    /// <summary>Stops the thread. Until it has exited it pins the namespace, so `ip netns del` would not free it.</summary>
    public void Dispose()
    {
        _requests.CompleteAdding();
        if (_thread.IsAlive && !_thread.Join(TimeSpan.FromSeconds(10)))
        {
            throw new InvalidOperationException($"Thread '{_thread.Name}' did not stop within 10 s.");
        }

        foreach (var stock in _stocks.Values)
        {
            while (stock.Sockets.TryDequeue(out var socket))
            {
                socket.Dispose();
            }
        }

        _requests.Dispose();
    }

    /// <summary>
    /// Runs <paramref name="action"/> on a new thread that joined the namespace at <paramref name="path"/>, which then
    /// ends (a thread that joined a namespace must never serve anything else), and returns its result or rethrows.
    /// </summary>
    public static T RunOnce<T>(string path, Func<T> action)
    {
        T result = default!;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                Join(path);
                result = action();
            }
#pragma warning disable CA1031 // Rethrown on the caller's thread.
            catch (Exception e)
#pragma warning restore CA1031
            {
                error = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
            }
        });
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    private static void Join(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        if (Interop.Libc.SetNs(handle, Interop.Libc.CloneNewNet) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new InvalidOperationException(
                $"setns({path}, CLONE_NEWNET) failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}). Run as root or grant CAP_SYS_ADMIN.");
        }
    }

    private void Run(object? state)
    {
        var (path, joined) = ((string, TaskCompletionSource))state!;
        try
        {
            Join(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            _requests.CompleteAdding();
            joined.SetException(e);
            return;
        }

        joined.SetResult();
        foreach (var request in _requests.GetConsumingEnumerable())
        {
            if (!request.RefillOnly)
            {
                try
                {
                    request.Completion.SetResult(new Socket(request.Family, request.Type, request.Protocol));
                }
#pragma warning disable CA1031 // Whatever socket creation throws belongs to the caller; this thread must live on.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    request.Completion.SetException(e);
                    continue;
                }
            }

            if (request.Refill)
            {
                Refill(request);
            }
        }
    }

    private void Refill(SocketRequest request)
    {
        var stock = _stocks.GetOrAdd(request.Kind, static _ => new Stock());
        try
        {
            while (stock.Sockets.Count < StockSize && !_requests.IsAddingCompleted)
            {
                stock.Sockets.Enqueue(new Socket(request.Family, request.Type, request.Protocol));
            }
        }
        catch (SocketException)
        {
            // Out of descriptors, say: the stock stays short and the next caller asks again, and sees the error itself.
        }
        finally
        {
            Volatile.Write(ref stock.RefillPending, 0);
        }
    }

    // RunContinuationsAsynchronously matters: an awaiting caller must never continue on this thread, or its code
    // would run (and create sockets) inside the namespace by accident.
    private sealed class SocketRequest(AddressFamily family, SocketType type, ProtocolType protocol, bool refill = false, bool refillOnly = false)
    {
        public AddressFamily Family { get; } = family;
        public SocketType Type { get; } = type;
        public ProtocolType Protocol { get; } = protocol;
        public SocketKind Kind => new(Family, Type, Protocol);

        /// <summary>Also fill the stock of this kind of socket.</summary>
        public bool Refill { get; } = refill || refillOnly;

        /// <summary>Only fill the stock; nobody waits.</summary>
        public bool RefillOnly { get; } = refillOnly;

        public TaskCompletionSource<Socket> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly record struct SocketKind(AddressFamily Family, SocketType Type, ProtocolType Protocol);

    private sealed class Stock
    {
        public readonly ConcurrentQueue<Socket> Sockets = new();
        public int RefillPending;
    }
}
