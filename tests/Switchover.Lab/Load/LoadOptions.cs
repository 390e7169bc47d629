namespace Switchover.Lab;

/// <summary>How connections are used.</summary>
public enum ConnectionMode
{
    /// <summary>One connection per worker, reused until the server sends <c>Connection: close</c> or a request fails.</summary>
    KeepAlive,

    /// <summary>A new connection for every request, sent with <c>Connection: close</c>.</summary>
    NewConnectionPerRequest,
}

/// <summary>What one request is.</summary>
public enum LoadProtocol
{
    /// <summary>An HTTP/1.1 GET of <see cref="LoadOptions.Path"/>, judged by its status and body.</summary>
    Http,

    /// <summary>
    /// Raw TCP request/response, for servers that do not speak HTTP: <see cref="LoadOptions.RawRequest"/> is sent as is,
    /// and the response is everything up to the next <see cref="LoadOptions.RawTerminator"/> (a line, by default). With
    /// <see cref="ConnectionMode.NewConnectionPerRequest"/> the client closes the connection after the response.
    /// </summary>
    RawTcp,
}

/// <summary>
/// Options of one load run. A run stops at whichever comes first: <see cref="MaxDuration"/>, <see cref="MaxRequests"/>,
/// <see cref="LoadRun.StopAsync"/>, or the caller's cancellation token. The values are read once, when the run starts.
/// </summary>
public sealed class LoadOptions
{
    /// <summary>Default: <see cref="ConnectionMode.KeepAlive"/>.</summary>
    public ConnectionMode Mode { get; set; } = ConnectionMode.KeepAlive;

    /// <summary>Default: <see cref="LoadProtocol.Http"/>.</summary>
    public LoadProtocol Protocol { get; set; } = LoadProtocol.Http;

    /// <summary>RawTcp: the bytes of one request. Default: "ping\n".</summary>
    public ReadOnlyMemory<byte> RawRequest { get; set; } = "ping\n"u8.ToArray();

    /// <summary>RawTcp: the byte that ends a response. Default: '\n' (a '\r' before it is dropped from the response too).</summary>
    public byte RawTerminator { get; set; } = (byte)'\n';

    /// <summary>
    /// RawTcp: responses the server sends unasked on each new connection (a greeting, as SMTP's 220 line), read before
    /// the first request on it; a connection that ends during them fails that request. Default: 0.
    /// </summary>
    public int RawGreetingResponses { get; set; }

    /// <summary>Workers per target, each with at most one request in flight. Default: 4; 1 to 4096.</summary>
    public int Concurrency { get; set; } = 4;

    /// <summary>No request starts after this much time. Default: 10 s; at most a day.</summary>
    public TimeSpan MaxDuration { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>No more requests than this are started, over all targets. Default: 1,000,000.</summary>
    public long MaxRequests { get; set; } = 1_000_000;

    /// <summary>The request target, starting with '/'. Default: "/". Not used for <see cref="LoadProtocol.RawTcp"/>.</summary>
    public string Path { get; set; } = "/";

    /// <summary>How long a connection attempt may take before it counts as <see cref="RequestOutcome.Timeout"/>. Default: 5 s.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long sending a request and receiving its whole response may take before it counts as
    /// <see cref="RequestOutcome.Timeout"/>. Also bounds how long a stopped run waits for requests in flight. Default: 10 s.
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>A cap on the average request rate over all workers and targets. Default: null, as fast as the server answers.</summary>
    public double? RequestsPerSecond { get; set; }

    /// <summary>
    /// Judges the body of every 2xx response (RawTcp: every response); false (or an exception) makes the request <see cref="RequestOutcome.BadBody"/>.
    /// Default: null, every body is fine. Called concurrently from many workers.
    /// </summary>
    public Func<string, bool>? BodyValidator { get; set; }

    /// <summary>
    /// Whether a worker checks a kept-alive connection before it sends the next request on it, as a careful client
    /// does: one the server has closed (FIN or RST already arrived) is replaced before anything is sent, and counted in
    /// <see cref="LoadResult.StaleConnectionsDiscarded"/>, not as a failure. False reuses the connection blindly, as
    /// Python's http.client and many HTTP/1.1 clients do: a request sent into a connection the server closed while it
    /// was idle fails as <see cref="RequestOutcome.ReusedConnectionClosed"/>. Default: true.
    /// </summary>
    public bool ProbeBeforeReuse { get; set; } = true;

    /// <summary>
    /// Each worker pauses between a response and its next request for a time drawn uniformly from
    /// [<see cref="MinIdleBetweenRequests"/>, <see cref="MaxIdleBetweenRequests"/>], keeping its connection open and
    /// idle meanwhile (a client that thinks between requests). Default: zero, no pause.
    /// </summary>
    public TimeSpan MinIdleBetweenRequests { get; set; }

    /// <summary>See <see cref="MinIdleBetweenRequests"/>. Default: zero.</summary>
    public TimeSpan MaxIdleBetweenRequests { get; set; }

    /// <summary>Seeds the idle times (worker i uses Seed + i); null: a random seed. Default: null.</summary>
    public int? Seed { get; set; }

    /// <summary>Failures kept with their details; further ones are only counted. Default: 100,000.</summary>
    public int MaxRecordedFailures { get; set; } = 100_000;

    internal LoadOptions Snapshot() => (LoadOptions)MemberwiseClone();

    internal void Validate()
    {
        var errors = new List<string>();
        if (!Enum.IsDefined(Mode))
        {
            errors.Add($"{nameof(Mode)} {Mode} is not a {nameof(ConnectionMode)}");
        }

        if (Concurrency is < 1 or > 4096)
        {
            errors.Add($"{nameof(Concurrency)} must be 1 to 4096 (was {Concurrency})");
        }

        if (MaxDuration <= TimeSpan.Zero || MaxDuration > TimeSpan.FromDays(1))
        {
            errors.Add($"{nameof(MaxDuration)} must be positive and at most a day (was {MaxDuration})");
        }

        if (MaxRequests < 1)
        {
            errors.Add($"{nameof(MaxRequests)} must be at least 1 (was {MaxRequests})");
        }

        if (string.IsNullOrEmpty(Path) || Path[0] != '/' || Path.Any(c => c <= ' ' || c >= 0x7f))
        {
            errors.Add($"{nameof(Path)} must start with '/' and hold only visible ASCII characters (was '{Path}')");
        }

        if (ConnectTimeout <= TimeSpan.Zero || RequestTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{nameof(ConnectTimeout)} and {nameof(RequestTimeout)} must be positive (were {ConnectTimeout} and {RequestTimeout})");
        }

        if (RequestsPerSecond is { } rate && !(rate > 0 && double.IsFinite(rate)))
        {
            errors.Add($"{nameof(RequestsPerSecond)} must be positive or null (was {rate})");
        }

        if (!Enum.IsDefined(Protocol))
        {
            errors.Add($"{nameof(Protocol)} {Protocol} is not a {nameof(LoadProtocol)}");
        }

        if (Protocol == LoadProtocol.RawTcp && RawRequest.IsEmpty)
        {
            errors.Add($"{nameof(RawRequest)} must not be empty for {nameof(LoadProtocol.RawTcp)}");
        }

        if (RawGreetingResponses is < 0 or > 100)
        {
            errors.Add($"{nameof(RawGreetingResponses)} must be 0 to 100 (was {RawGreetingResponses})");
        }

        if (MinIdleBetweenRequests < TimeSpan.Zero || MaxIdleBetweenRequests < MinIdleBetweenRequests || MaxIdleBetweenRequests > TimeSpan.FromHours(1))
        {
            errors.Add($"{nameof(MinIdleBetweenRequests)} and {nameof(MaxIdleBetweenRequests)} must satisfy 0 <= min <= max <= 1 h (were {MinIdleBetweenRequests} and {MaxIdleBetweenRequests})");
        }

        if (MaxRecordedFailures < 0)
        {
            errors.Add($"{nameof(MaxRecordedFailures)} must not be negative (was {MaxRecordedFailures})");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid load options: " + string.Join("; ", errors) + ".");
        }
    }
}
