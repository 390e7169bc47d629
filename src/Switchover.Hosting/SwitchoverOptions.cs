namespace Switchover.Hosting;

public enum SwitchoverMode
{
    /// <summary>Take over the public ports through nftables; fail at start when nftables or privileges are missing.</summary>
    Required,

    /// <summary>Bind the configured endpoints directly, as if Switchover were not there.</summary>
    Disabled,
}

/// <summary>How a new generation proves it serves before it takes over.</summary>
public enum ReadinessProbe
{
    /// <summary>GET <see cref="SwitchoverOptions.ReadinessPath"/> on each private port; any answer below 500 counts.</summary>
    Http,

    /// <summary>A TCP connection to each private port is accepted (for servers that do not speak HTTP).</summary>
    Tcp,
}

/// <summary>Options of <c>UseSwitchover()</c>, bound to the <c>Switchover</c> configuration section.</summary>
public sealed class SwitchoverOptions
{
    /// <summary>Default: <see cref="SwitchoverMode.Required"/> on Linux, <see cref="SwitchoverMode.Disabled"/> elsewhere.</summary>
    public SwitchoverMode Mode { get; set; } = OperatingSystem.IsLinux() ? SwitchoverMode.Required : SwitchoverMode.Disabled;

    /// <summary>
    /// The service's name on this host: it owns the nftables table <c>inet switchover_NAMESPACE</c> and the state
    /// directory. Only [a-z0-9_-], at most 40 characters. Default: the application name, lower-cased.
    /// </summary>
    public string? Namespace { get; set; }

    /// <summary>Where namespaces keep their state and lock. Default: /run/switchover.</summary>
    public string StateDirectory { get; set; } = "/run/switchover";

    /// <summary>
    /// How the public ports reach the active generation. Default: <see cref="Switchover.Steering.Tproxy"/>, which a
    /// default-deny host firewall that allows the public port lets through as it is;
    /// <see cref="Switchover.Steering.Redirect"/> is NAT (the firewall must then allow the private ports too).
    /// </summary>
    public Steering Steering { get; set; } = Steering.Tproxy;

    /// <summary>How readiness is checked on the private ports, after the health checks. Default: <see cref="ReadinessProbe.Http"/>.</summary>
    public ReadinessProbe ReadinessProbe { get; set; } = ReadinessProbe.Http;

    /// <summary>The path the new generation requests on its own private port before it takes over. Default: "/".</summary>
    public string ReadinessPath { get; set; } = "/";

    /// <summary>
    /// The server name (SNI) the readiness request sends to HTTPS endpoints. Default: none, so the endpoint's default
    /// certificate answers; set it when the endpoint only serves certain names.
    /// </summary>
    public string? ReadinessHost { get; set; }

    /// <summary>How long the new generation may take to become ready before it gives up. Default: 60 s.</summary>
    public TimeSpan ReadinessTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long to wait for the namespace lock (another deploy in progress). Default: 30 s.</summary>
    public TimeSpan LockTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Who carries out the handoff. <c>auto</c> (default): the Switchover agent at /run/switchover/agent.sock when this
    /// process lacks CAP_NET_ADMIN and that socket exists (an app running without privileges), this process otherwise
    /// (root apps, as before). <c>off</c>: always this process. An absolute path: always the agent listening there.
    /// </summary>
    public string Agent { get; set; } = "auto";

    /// <summary>How long a request to the agent is retried while no agent answers (it is restarting). Default: 30 s.</summary>
    public TimeSpan AgentReconnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a superseded generation keeps its listeners and watches its successor (its process through a pidfd,
    /// its health through its private ports): if the successor dies or stays unhealthy within the window, this
    /// generation takes the public ports back in one transaction and serves on. The drain runs meanwhile, but the
    /// generation never exits before the window is over. Zero disables it (drain and exit at once).
    /// Default: 10 s: a new version that fails under real traffic mostly does so on its first requests, seconds after
    /// the swap; 10 s covers that many times over while staying under the drain bound (Drain:MaxDuration, 20 s), so
    /// a busy drain hides it entirely and an idle one keeps the old process (and its memory) at most 10 s longer.
    /// </summary>
    public TimeSpan RollbackWindow { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How a superseded generation drains.</summary>
    public DrainOptions Drain { get; } = new();

    /// <summary>
    /// An nft program to apply the rules with (<c>nft -f -</c>), e.g. "nft" from PATH or "/usr/sbin/nft", or
    /// "libnftables" for the rules' text through libnftables.so.1 in this process. Default: none, the rules go through
    /// Switchover's own nf_tables netlink batches in this process: no program is started and no library loaded.
    /// </summary>
    public string? NftPath { get; set; }

    /// <summary>
    /// A conntrack program to count flows with (<c>conntrack -L</c>). Default: none, the drain asks the kernel through
    /// ctnetlink in this process, and no program is started.
    /// </summary>
    public string? ConntrackPath { get; set; }
}

/// <summary>What a superseded generation does with an HTTP/1.x connection that is open but has no request in progress.</summary>
public enum IdleConnectionPolicy
{
    /// <summary>
    /// Keep it open until the client sends its next request (answered, with <c>Connection: close</c>) or closes it,
    /// for as long as the server would without a deploy: Kestrel's keep-alive timeout
    /// (<c>Kestrel:Limits:KeepAliveTimeout</c>, 130 s by default). A deploy then closes no connection under a client
    /// that the client could not also lose without one. The cost: a superseded generation lives until its last client
    /// came back or went, at most the keep-alive timeout (see docs/drain.md).
    /// </summary>
    WaitForClient,

    /// <summary>
    /// Close idle connections once no request has arrived on the generation for <see cref="DrainOptions.QuietPeriod"/>
    /// (the behaviour before issue 9). Short drains; a client that reuses a pooled connection without checking it first
    /// (Python's http.client, many HTTP/1.1 clients) can lose the request it sends just as the connection closes.
    /// </summary>
    CloseAfterQuiet,
}

/// <summary>How a superseded generation drains before Kestrel stops.</summary>
public sealed class DrainOptions
{
    /// <summary>Added to Kestrel's keep-alive timeout for the default <see cref="MaxDuration"/> under <see cref="IdleConnectionPolicy.WaitForClient"/>.</summary>
    internal static readonly TimeSpan KeepAliveMargin = TimeSpan.FromSeconds(10);

    /// <summary>The default <see cref="MaxDuration"/> under <see cref="IdleConnectionPolicy.WaitForClient"/> when Kestrel's keep-alive timeout is infinite.</summary>
    internal static readonly TimeSpan InfiniteKeepAliveBound = TimeSpan.FromMinutes(10);

    /// <summary>The default <see cref="MaxDuration"/> under <see cref="IdleConnectionPolicy.CloseAfterQuiet"/>.</summary>
    internal static readonly TimeSpan CloseAfterQuietBound = TimeSpan.FromSeconds(20);

    /// <summary>
    /// What happens to idle HTTP/1.x keep-alive connections of a generation superseded by a deploy. Default:
    /// <see cref="IdleConnectionPolicy.WaitForClient"/>. A generation stopped with no successor (it stepped down) always
    /// closes them after the quiet period: a client has nowhere to go then. HTTP/2 connections get GOAWAY either way.
    /// </summary>
    public IdleConnectionPolicy IdleConnections { get; set; } = IdleConnectionPolicy.WaitForClient;

    /// <summary>
    /// How long the accept queues must stay empty, with no half-open flow redirected to this generation and no
    /// connection it must still wait for (see <see cref="IdleConnections"/>), before the listeners close. Default: 1 s.
    /// </summary>
    public TimeSpan QuietPeriod { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The upper bound of the drain; Kestrel then stops, closing what is still open. Default: Kestrel's keep-alive
    /// timeout plus 10 s under <see cref="IdleConnectionPolicy.WaitForClient"/> (140 s with Kestrel's defaults), 20 s
    /// under <see cref="IdleConnectionPolicy.CloseAfterQuiet"/> (10 min under WaitForClient when the keep-alive timeout
    /// is infinite). A MaxDuration set here always wins: under WaitForClient one shorter than the keep-alive timeout plus
    /// the quiet period closes connections a client may still reuse, and a warning at start says so. The host's
    /// <c>ShutdownTimeout</c> is raised to cover the bound (and logged), since the drain runs inside the host's shutdown.
    /// </summary>
    public TimeSpan? MaxDuration { get; set; }

    /// <summary>How often the accept queues and conntrack are read. Default: 100 ms.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The drain's bound given the server's keep-alive timeout: <see cref="MaxDuration"/>, or its default.</summary>
    internal TimeSpan Bound(TimeSpan keepAliveTimeout) => MaxDuration
        ?? (IdleConnections != IdleConnectionPolicy.WaitForClient ? CloseAfterQuietBound
            : IsInfinite(keepAliveTimeout) ? InfiniteKeepAliveBound
            : keepAliveTimeout + KeepAliveMargin);

    internal static bool IsInfinite(TimeSpan timeout) => timeout == Timeout.InfiniteTimeSpan || timeout >= TimeSpan.FromDays(1);
}
