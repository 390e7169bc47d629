using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Switchover.VmLab.Agent;

/// <summary>
/// The host's end of the agent protocol (Guest/agent): a Unix socket the test listens on and qemu connects to, which
/// carries the VM's virtio-serial port "vmlab.agent". One line per message:
/// <c>run &lt;id&gt; &lt;seconds&gt;</c> from the host (the script is the file &lt;id&gt;.sh in the share),
/// <c>ready &lt;release&gt;</c> and <c>done &lt;id&gt; &lt;exit code&gt; &lt;timed out 0|1&gt;</c> from the VM.
/// </summary>
internal sealed class AgentChannel : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly ConcurrentDictionary<long, TaskCompletionSource<(int ExitCode, bool TimedOut)>> _pending = new();
    private readonly TaskCompletionSource<string> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private Socket? _connection;
    private Task _reader = Task.CompletedTask;

    private AgentChannel(Socket listener) => _listener = listener;

    /// <summary>Completes with the guest's kernel release when the agent has started.</summary>
    public Task<string> Ready => _ready.Task;

    /// <summary>Completes when the VM side closes (qemu exited) or the channel is disposed.</summary>
    public Task Closed => _closed.Task;

    public static AgentChannel Listen(string socketPath)
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(socketPath));
            listener.Listen(1);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        return new AgentChannel(listener);
    }

    /// <summary>Waits for qemu to connect (it does so while starting, before the guest runs).</summary>
    public async Task AcceptAsync(CancellationToken cancellationToken)
    {
        _connection = await _listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
        _reader = Task.Run(() => ReadAsync(_connection, _stop.Token), CancellationToken.None);
    }

    /// <summary>Sends one run request and waits for its answer; the caller bounds the wait with its token.</summary>
    public async Task<(int ExitCode, bool TimedOut)> RunAsync(long id, int seconds, CancellationToken cancellationToken)
    {
        var connection = _connection ?? throw new InvalidOperationException("The VM's agent channel is not connected.");
        var answer = new TaskCompletionSource<(int, bool)>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = answer;
        try
        {
            if (_closed.Task.IsCompleted)
            {
                throw new VmLabException("The VM's agent channel is closed (the VM is gone).");
            }

            var line = Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"run {id} {seconds}\n"));
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await connection.SendAsync(line, SocketFlags.None, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _writeLock.Release();
            }

            return await answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _connection?.Dispose();
        _listener.Dispose();
        try
        {
            await _reader.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException or SocketException or IOException)
        {
            // Closing; nothing to report.
        }

        Close(new ObjectDisposedException(nameof(AgentChannel), "The VM was stopped."));
        _stop.Dispose();
        _writeLock.Dispose();
    }

    private async Task ReadAsync(Socket connection, CancellationToken cancellationToken)
    {
        Exception reason = new VmLabException("The VM's agent channel closed: qemu exited or the guest closed the port.");
        try
        {
            using var stream = new NetworkStream(connection, ownsSocket: false);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
            {
                Handle(line);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            reason = new VmLabException($"The VM's agent channel failed: {e.Message}", e);
        }
        finally
        {
            Close(reason);
        }
    }

    private void Handle(string line)
    {
        var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length >= 2 && words[0] == "ready")
        {
            _ready.TrySetResult(words[1]);
        }
        else if (words.Length >= 4 && words[0] == "done"
            && long.TryParse(words[1], CultureInfo.InvariantCulture, out var id)
            && int.TryParse(words[2], CultureInfo.InvariantCulture, out var exitCode)
            && _pending.TryGetValue(id, out var answer))
        {
            answer.TrySetResult((exitCode, words[3] == "1"));
        }
        else if (words.Length >= 2 && words[0] == "error"
            && long.TryParse(words[1], CultureInfo.InvariantCulture, out var failed)
            && _pending.TryGetValue(failed, out var rejected))
        {
            rejected.TrySetException(new VmLabException($"The VM's agent rejected request {failed}: {line}"));
        }

        // Anything else (a line from an older agent, noise) is ignored; a request that gets no answer times out.
    }

    private void Close(Exception reason)
    {
        _ready.TrySetException(reason);
        foreach (var answer in _pending.Values)
        {
            answer.TrySetException(reason);
        }

        _closed.TrySetResult();
    }
}
