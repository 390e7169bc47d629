using Switchover.Lab;

namespace Switchover.Load.Suite;

/// <summary>Which rolling-deploy contender: the two baselines a user would otherwise use, and Switchover.</summary>
internal enum ContenderKind
{
    /// <summary>Stop the old process (SIGTERM, wait for it to exit), then start the new one on the public port.</summary>
    Naive,

    /// <summary>Start the new process on the same port with SO_REUSEPORT, then SIGTERM the old one.</summary>
    ReusePort,

    /// <summary>Launch the new generation; it takes the port over through the nftables redirect.</summary>
    Switchover,
}

/// <summary>Who generates the load: our raw-socket driver (Switchover.Lab) or wrk.</summary>
internal enum ClientKind
{
    Driver,
    Wrk,
}

/// <summary>Everything the suite does, with the defaults of the full and the quick suite. Read once at start.</summary>
internal sealed record SuiteSettings
{
    public bool Quick { get; init; }

    public bool RunRolling { get; init; } = true;

    public bool RunOverhead { get; init; } = true;

    public bool RunTiming { get; init; } = true;

    /// <summary>The drain scenario (what the idle-connection policies cost); not in the default selection: <c>--scenarios drain</c>.</summary>
    public bool RunDrain { get; init; }

    public bool RunKernel { get; init; } = true;

    /// <summary>Rule transactions per transport (libnftables, the nft program) in each phase of the kernel scenario.</summary>
    public int KernelTransactions { get; init; } = 300;

    /// <summary>Idle connections held on the old generation for the kernel scenario's drain polls and handoffs, one handoff each.</summary>
    public IReadOnlyList<int> KernelIdleConnections { get; init; } = [10_000, 50_000];

    /// <summary>
    /// The kernel scenario's parts that run: "transactions" (no load, then under rolling load), "programs" (strace of a
    /// handoff), "idle" (the drain polls and handoffs with idle connections, after three plain handoffs), "launch" and
    /// "memory". All by default; e.g. only "idle" in a VM where the open-file limit can be raised.
    /// </summary>
    public IReadOnlySet<string> KernelParts { get; init; } = KernelPartNames.ToHashSet();

    public static readonly string[] KernelPartNames = ["transactions", "programs", "idle", "launch", "memory"];

    /// <summary>Alternating rounds of the memory comparison (Switchover, then Mode=Disabled).</summary>
    public int KernelMemoryRounds { get; init; } = 5;

    public IReadOnlyList<ConnectionMode> Modes { get; init; } = [ConnectionMode.KeepAlive, ConnectionMode.NewConnectionPerRequest];

    public IReadOnlyList<ContenderKind> Contenders { get; init; } = [ContenderKind.Switchover, ContenderKind.Naive, ContenderKind.ReusePort];

    public IReadOnlyList<ClientKind> Clients { get; init; } = [ClientKind.Driver, ClientKind.Wrk];

    /// <summary>Modes in which wrk runs too (the quick suite: keep-alive only).</summary>
    public IReadOnlyList<ConnectionMode> WrkModes { get; init; } = [ConnectionMode.KeepAlive, ConnectionMode.NewConnectionPerRequest];

    /// <summary>Contenders that wrk runs against (the quick suite: Switchover and the naive baseline).</summary>
    public IReadOnlyList<ContenderKind> WrkContenders { get; init; } = [ContenderKind.Switchover, ContenderKind.Naive, ContenderKind.ReusePort];

    /// <summary>Connections (workers) over all targets of one rolling run, and of wrk (-c).</summary>
    public int Concurrency { get; init; } = 32;

    /// <summary>An optional cap on the request rate of our driver; null: as fast as the server answers.</summary>
    public double? Rate { get; init; }

    /// <summary>Handoffs of the reference (Switchover) run at least; the baselines replay its count.</summary>
    public int Handoffs { get; init; } = 8;

    /// <summary>At most this many handoffs for the baselines; null: as many as the Switchover run did.</summary>
    public int? BaselineHandoffs { get; init; }

    /// <summary>Requests the reference (Switchover, our driver) run of each mode must see at least; handoffs go on until then.</summary>
    public long MinRequests { get; init; }

    /// <summary>From the start of one handoff to the start of the next (a slower handoff delays the next one).</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Load before the first handoff.</summary>
    public TimeSpan Lead { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Load after the last handoff: the last superseded generation drains under load.</summary>
    public TimeSpan Tail { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>No rolling run's load lasts longer than this, whatever MinRequests asks.</summary>
    public TimeSpan MaxRunDuration { get; init; } = TimeSpan.FromMinutes(20);

    /// <summary>Clients of the overhead scenario (the quick suite leaves wrk out there).</summary>
    public IReadOnlyList<ClientKind> OverheadClients { get; init; } = [ClientKind.Driver, ClientKind.Wrk];

    public int OverheadRounds { get; init; } = 3;

    /// <summary>One more round per variant under <c>perf record -a -g</c>: the share of CPU in nftables chains and conntrack.</summary>
    public bool OverheadProfile { get; init; } = true;

    public TimeSpan OverheadRoundDuration { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Handoffs without load but a light probe, for rule-transaction and launch-to-serving percentiles.</summary>
    public int TimingSwaps { get; init; } = 20;

    /// <summary>Idle connections held open on the old generation during each of the <see cref="IdleSwaps"/>.</summary>
    public int IdleConnections { get; init; } = 10_000;

    public int IdleSwaps { get; init; } = 5;

    /// <summary>Drain scenario: Kestrel's keep-alive timeout for its generations; null: Kestrel's default (130 s).</summary>
    public TimeSpan? DrainKeepAlive { get; init; }

    public int DrainHandoffs { get; init; } = 4;

    /// <summary>Drain scenario: clients that come back after 0 to 3 s idle, over IPv4 and IPv6.</summary>
    public int DrainReturningClients { get; init; } = 8;

    /// <summary>Drain scenario: idle connections opened on each generation and never used again.</summary>
    public int DrainAbandoned { get; init; } = 200;

    /// <summary>The randomized fault soak; not in the default selection: <c>--scenarios soak</c>.</summary>
    public bool RunSoak { get; init; }

    /// <summary>Seeds the soak's plan (<c>--seed</c>); without it the command line picks a random one and prints it first.</summary>
    public int SoakSeed { get; init; }

    /// <summary>Soak rounds at most.</summary>
    public int SoakRounds { get; init; } = 30;

    /// <summary>No soak round starts after this long.</summary>
    public TimeSpan SoakDuration { get; init; } = TimeSpan.FromMinutes(20);

    /// <summary>The whole suite is aborted (and reported as an error) after this long.</summary>
    public TimeSpan MaxSuiteDuration { get; init; } = TimeSpan.FromMinutes(30);

    public string? OutputDirectory { get; init; }

    public static SuiteSettings Full { get; } = new();

    public static SuiteSettings QuickSuite { get; } = new()
    {
        Quick = true,
        Handoffs = 2,
        Interval = TimeSpan.FromSeconds(1.5),
        Lead = TimeSpan.FromSeconds(1),
        Tail = TimeSpan.FromSeconds(1.5),
        WrkModes = [ConnectionMode.KeepAlive],
        WrkContenders = [ContenderKind.Switchover, ContenderKind.Naive],
        OverheadClients = [ClientKind.Driver],
        OverheadRounds = 2,
        OverheadRoundDuration = TimeSpan.FromSeconds(1),
        TimingSwaps = 4,
        IdleSwaps = 1,
        DrainKeepAlive = TimeSpan.FromSeconds(10),
        DrainHandoffs = 2,
        KernelTransactions = 100,
        KernelIdleConnections = [10_000],
        KernelMemoryRounds = 3,
        MaxSuiteDuration = TimeSpan.FromMinutes(10),
    };
}
