using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Switchover.Lab;

/// <summary>
/// One closed-loop client: at most one request in flight, on at most one connection. Never resends a request: every
/// attempt is counted once, as what it was. Statistics are its own (no sharing on the hot path) and are merged by the run.
/// </summary>
internal sealed class LoadWorker : IDisposable
{
    private static readonly TimeSpan CloseWait = TimeSpan.FromSeconds(1);

    private readonly LoadRun _run;
    private readonly LoadTarget _target;
    private readonly ConnectionMode _mode;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeSpan _requestTimeout;
    private readonly Func<string, bool>? _validator;
    private readonly byte[] _request;
    private readonly HttpResponseReader _reader = new();
    private readonly RawResponseReader _raw = new();
    private readonly bool _rawTcp;
    private readonly byte _rawTerminator;
    private readonly int _rawGreetings;
    private readonly BodyCache _bodies = new();
    private readonly byte[] _closeBuffer = new byte[256];
    private readonly bool _probe;
    private readonly TimeSpan _minIdle;
    private readonly TimeSpan _maxIdle;
    private readonly Random _random;
    private CancellationTokenSource _timeout;
    private Socket? _socket;
    private long[] _timelineOk = new long[64];
    private long[] _timelineFailed = new long[64];

    public LoadWorker(LoadRun run, LoadTarget target, LoadOptions options, byte[] request, int index)
    {
        _probe = options.ProbeBeforeReuse;
        _minIdle = options.MinIdleBetweenRequests;
        _maxIdle = options.MaxIdleBetweenRequests;
        _random = options.Seed is { } seed ? new Random(seed + index) : new Random();
        _run = run;
        _target = target;
        _mode = options.Mode;
        _connectTimeout = options.ConnectTimeout;
        _requestTimeout = options.RequestTimeout;
        _validator = options.BodyValidator;
        _request = request;
        _rawTcp = options.Protocol == LoadProtocol.RawTcp;
        _rawTerminator = options.RawTerminator;
        _rawGreetings = options.RawGreetingResponses;
        _timeout = CancellationTokenSource.CreateLinkedTokenSource(run.AbortToken);
    }

    private enum Phase
    {
        Connect,
        Greeting,
        Send,
        Receive,
    }

    public LatencyHistogram Latency { get; } = new();

    public long[] Counts { get; } = new long[Enum.GetValues<RequestOutcome>().Length];

    public long ConnectionsOpened { get; private set; }

    public long StaleConnectionsDiscarded { get; private set; }

    public long Abandoned { get; private set; }

    /// <summary>Seconds of the run that saw at least one completed request by this worker.</summary>
    public int TimelineLength { get; private set; }

    public long TimelineOk(int second) => _timelineOk[second];

    public long TimelineFailed(int second) => _timelineFailed[second];

    public async Task RunAsync()
    {
        var first = true;
        while (true)
        {
            if (!first && _maxIdle > TimeSpan.Zero && !await _run.IdleAsync(NextIdle()).ConfigureAwait(false))
            {
                break;
            }

            first = false;
            if (!await _run.NextRequestAsync().ConfigureAwait(false))
            {
                break;
            }

            var start = Stopwatch.GetTimestamp();
            var attempt = await ExecuteAsync().ConfigureAwait(false);
            var end = Stopwatch.GetTimestamp();
            if (attempt.Outcome is not { } outcome)
            {
                Abandoned++;
                break;
            }

            Counts[(int)outcome]++;
            var second = (int)Stopwatch.GetElapsedTime(_run.StartTimestamp, end).TotalSeconds;
            EnsureTimeline(second);
            if (outcome == RequestOutcome.Ok)
            {
                Latency.RecordElapsed(start, end);
                _timelineOk[second]++;
                _run.RecordOk(_target.Name, attempt.Text!, end);
            }
            else
            {
                _timelineFailed[second]++;
                _run.RecordFailure(_target.Name, outcome, attempt.Text!, end);
            }
        }
    }

    public void Dispose()
    {
        CloseSocket();
        _reader.Dispose();
        _raw.Dispose();
        _timeout.Dispose();
    }

    private TimeSpan NextIdle() => _minIdle + ((_maxIdle - _minIdle) * _random.NextDouble());

    private static RequestOutcome Classify(SocketError error) => error switch
    {
        SocketError.ConnectionRefused => RequestOutcome.ConnectionRefused,

        // EPIPE surfaces as Shutdown: the kernel already knows the connection is gone, normally from an RST.
        SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown => RequestOutcome.ConnectionReset,
        SocketError.TimedOut => RequestOutcome.Timeout,
        _ => RequestOutcome.OtherError,
    };

    private static string Describe(Phase phase) => phase switch
    {
        Phase.Connect => "connecting",
        Phase.Greeting => "awaiting the greeting",
        Phase.Send => "sending the request",
        _ => "awaiting the response",
    };

    private static string Truncate(string text) => text.Length <= 200 ? text : string.Concat(text.AsSpan(0, 200), "...");

    private async ValueTask<Attempt> ExecuteAsync()
    {
        var phase = Phase.Connect;
        var reused = false;
        try
        {
            if (_probe && _socket is not null && !IsReusable(_socket))
            {
                // The server closed (or reset) the idle connection before we used it again. Any client checks a pooled
                // connection before use; nothing was sent yet, so this is not a retry and not a failed request.
                CloseSocket();
                StaleConnectionsDiscarded++;
            }

            if (_socket is null)
            {
                _timeout.CancelAfter(_connectTimeout);
                _socket = await _target.Namespace.CreateSocketAsync(_target.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
                    .ConfigureAwait(false);
                _socket.NoDelay = true;
                _reader.Reset();
                _raw.Reset();
                await _socket.ConnectAsync(_target.EndPoint, _timeout.Token).ConfigureAwait(false);
                ConnectionsOpened++;
                if (_rawTcp && _rawGreetings > 0)
                {
                    phase = Phase.Greeting;
                    _timeout.CancelAfter(_requestTimeout);
                    for (var i = 0; i < _rawGreetings; i++)
                    {
                        await _raw.ReadAsync(_socket, _rawTerminator, _timeout.Token).ConfigureAwait(false);
                    }
                }
            }

            else
            {
                reused = true;
            }

            phase = Phase.Send;
            _timeout.CancelAfter(_requestTimeout);
            await _socket.SendAsync(_request, SocketFlags.None, _timeout.Token).ConfigureAwait(false);
            phase = Phase.Receive;
            if (_rawTcp)
            {
                await _raw.ReadAsync(_socket, _rawTerminator, _timeout.Token).ConfigureAwait(false);
                var response = JudgeBody(_raw.Response);
                if (_mode == ConnectionMode.NewConnectionPerRequest)
                {
                    // A raw protocol has no way to ask the server to close first; the client does, and keeps the TIME_WAIT.
                    CloseSocket();
                }

                return response;
            }

            await _reader.ReadAsync(_socket, _timeout.Token).ConfigureAwait(false);
            var attempt = Judge();
            if (_mode == ConnectionMode.NewConnectionPerRequest || _reader.ConnectionClose)
            {
                await CloseGracefullyAsync().ConfigureAwait(false);
            }

            return attempt;
        }
        catch (Exception) when (_run.AbortToken.IsCancellationRequested)
        {
            CloseSocket();
            return default;
        }
        catch (OperationCanceledException)
        {
            CloseSocket();
            return Attempt.Failed(RequestOutcome.Timeout, phase == Phase.Connect
                ? $"no connection within {_connectTimeout.TotalSeconds:0.###} s"
                : $"no complete response within {_requestTimeout.TotalSeconds:0.###} s ({Describe(phase)})");
        }
        catch (SocketException e)
        {
            var lost = reused && !_probe && !_rawTcp && (phase is Phase.Send or Phase.Receive) && !_reader.HasPendingBytes
                && Classify(e.SocketErrorCode) == RequestOutcome.ConnectionReset;
            CloseSocket();
            return lost
                ? Attempt.Failed(RequestOutcome.ReusedConnectionClosed, $"reused kept-alive connection was closed by the server: {e.SocketErrorCode} while {Describe(phase)}")
                : Attempt.Failed(Classify(e.SocketErrorCode), $"{e.SocketErrorCode} while {Describe(phase)}: {e.Message}");
        }
        catch (HttpEndOfStreamException e)
        {
            CloseSocket();
            return reused && !_probe && e.BeforeAnyByte
                ? Attempt.Failed(RequestOutcome.ReusedConnectionClosed, "reused kept-alive connection was closed by the server before any byte of the response (http.client: RemoteDisconnected)")
                : Attempt.Failed(RequestOutcome.EndOfStreamBeforeResponse, e.Message);
        }
        catch (HttpProtocolException e)
        {
            CloseSocket();
            return Attempt.Failed(RequestOutcome.OtherError, "malformed response: " + e.Message);
        }
#pragma warning disable CA1031 // Whatever happened to this request is recorded as its outcome; the run goes on.
        catch (Exception e)
#pragma warning restore CA1031
        {
            CloseSocket();
            return Attempt.Failed(RequestOutcome.OtherError, $"{e.GetType().Name} while {Describe(phase)}: {e.Message}");
        }
        finally
        {
            if (!_timeout.TryReset())
            {
                _timeout.Dispose();
                _timeout = CancellationTokenSource.CreateLinkedTokenSource(_run.AbortToken);
            }
        }
    }

    private Attempt Judge()
    {
        var status = _reader.StatusCode;
        if (status is < 200 or > 299)
        {
            return Attempt.Failed(RequestOutcome.BadStatus, $"HTTP {status}");
        }

        return JudgeBody(_reader.Body);
    }

    private Attempt JudgeBody(ReadOnlySpan<byte> bytes)
    {
        var body = _bodies.GetString(bytes);
        if (_validator is null)
        {
            return Attempt.Ok(body);
        }

        try
        {
            return _validator(body) ? Attempt.Ok(body) : Attempt.Failed(RequestOutcome.BadBody, $"body rejected: '{Truncate(body)}'");
        }
#pragma warning disable CA1031 // A throwing validator judges the body bad; the message says why.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Attempt.Failed(RequestOutcome.BadBody, $"body validator threw {e.GetType().Name}: {e.Message}; body '{Truncate(body)}'");
        }
    }

    private static bool IsReusable(Socket socket)
    {
        try
        {
            // Readable while idle means FIN, RST or bytes nobody asked for: in every case the connection is done.
            return !socket.Poll(0, SelectMode.SelectRead);
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private async ValueTask CloseGracefullyAsync()
    {
        // Wait briefly for the server's FIN so that it, not this client, holds the TIME_WAIT state: otherwise a fast
        // run of new connections would exhaust the client's ephemeral ports.
        if (_reader.ConnectionClose && _socket is not null)
        {
            try
            {
                _timeout.CancelAfter(CloseWait < _requestTimeout ? CloseWait : _requestTimeout);
                while (await _socket.ReceiveAsync(_closeBuffer, SocketFlags.None, _timeout.Token).ConfigureAwait(false) > 0)
                {
                }
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                // The response is complete; how the connection ends after it does not matter.
            }
        }

        CloseSocket();
    }

    private void CloseSocket()
    {
        _socket?.Dispose();
        _socket = null;
    }

    private void EnsureTimeline(int second)
    {
        if (second >= _timelineOk.Length)
        {
            var length = Math.Max(second + 1, _timelineOk.Length * 2);
            Array.Resize(ref _timelineOk, length);
            Array.Resize(ref _timelineFailed, length);
        }

        TimelineLength = Math.Max(TimelineLength, second + 1);
    }

    /// <summary>What an attempt came to: the body when OK, else what went wrong. Default: abandoned (the run was aborted while it was in flight).</summary>
    private readonly record struct Attempt(RequestOutcome? Outcome, string? Text)
    {
        public static Attempt Ok(string body) => new(RequestOutcome.Ok, body);

        public static Attempt Failed(RequestOutcome outcome, string detail) => new(outcome, detail);
    }

    /// <summary>Decodes bodies, reusing the string of any of the last few distinct bodies seen: most runs see one or two.</summary>
    private sealed class BodyCache
    {
        private const int Size = 4;
        private const int MaxCachedLength = 64 * 1024;
        private readonly byte[]?[] _bytes = new byte[]?[Size];
        private readonly string[] _strings = new string[Size];
        private int _next;

        public string GetString(ReadOnlySpan<byte> body)
        {
            for (var i = 0; i < Size; i++)
            {
                if (_bytes[i] is { } cached && body.SequenceEqual(cached))
                {
                    return _strings[i];
                }
            }

            var text = Encoding.UTF8.GetString(body);
            if (body.Length <= MaxCachedLength)
            {
                _bytes[_next] = body.ToArray();
                _strings[_next] = text;
                _next = (_next + 1) % Size;
            }

            return text;
        }
    }
}
