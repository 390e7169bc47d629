using System.Globalization;
using Switchover.Lab;
using Switchover.Load.Suite;

namespace Switchover.Load.Contenders;

/// <summary>
/// A way to replace the server on the public port with a new version: the unit a rolling run compares. Every process it
/// starts runs in the lab's server namespace; disposing stops them all (SIGTERM, then SIGKILL).
/// </summary>
internal abstract class Contender : IAsyncDisposable
{
    internal static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);
    private readonly List<LabProcess> _processes = [];

    protected Contender(TwoHostLab lab, int port)
    {
        Lab = lab;
        Port = port;
    }

    public abstract ContenderKind Kind { get; }

    /// <summary>What the contender does at each handoff, for the report.</summary>
    public abstract string Description { get; }

    public TwoHostLab Lab { get; }

    public int Port { get; }

    /// <summary>Every process started so far, oldest first.</summary>
    public IReadOnlyList<LabProcess> Processes
    {
        get
        {
            lock (_processes)
            {
                return [.. _processes];
            }
        }
    }

    /// <summary>The process serving now.</summary>
    public abstract LabProcess? Current { get; }

    public static Contender Create(ContenderKind kind, TwoHostLab lab, int port) => kind switch
    {
        ContenderKind.Naive => new NaiveRestart(lab, port),
        ContenderKind.ReusePort => new ReusePortOverlap(lab, port),
        ContenderKind.Switchover => new SwitchoverContender(lab, port),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Starts v1 and returns once it serves on the public port.</summary>
    public abstract Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Replaces the serving version with <paramref name="version"/> and returns once the new one serves.</summary>
    public abstract Task<HandoffRecord> HandOffAsync(int version, CancellationToken cancellationToken);

    /// <summary>Waits until every process but the current one has exited; returns how many have, of how many.</summary>
    public async Task<(int Exited, int Total)> WaitForRetiredAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var retired = Processes.Where(p => p != Current).ToList();
        try
        {
            await Task.WhenAll(retired.Select(p => p.Exited)).WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            // Counted below.
        }

        return (retired.Count(p => p.HasExited), retired.Count);
    }

    public virtual async ValueTask DisposeAsync()
    {
        foreach (var process in Processes.Where(p => !p.HasExited))
        {
            try
            {
                process.SendSignal(Signals.Terminate);
            }
            catch (InvalidOperationException)
            {
                // It exited meanwhile.
            }
        }

        foreach (var process in Processes)
        {
            try
            {
                await process.Exited.WaitAsync(StopTimeout);
            }
            catch (TimeoutException)
            {
                await Console.Error.WriteLineAsync($"{process} did not stop within {StopTimeout.TotalSeconds} s of SIGTERM; killing it.");
            }

            await process.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Starts one process of the app bound directly to the public port (Switchover disabled), dual stack.</summary>
    protected LabProcess LaunchDirect(string appPath, string text, params string[] extraArguments)
    {
        string[] arguments =
        [
            appPath,
            "--urls", $"http://[::]:{Port.ToString(CultureInfo.InvariantCulture)}",
            "--Switchover:Mode=Disabled",
            $"--Text={text}",
            "--contentRoot", Path.GetDirectoryName(appPath)!,
            .. extraArguments,
        ];
        return Track(Lab.Server.StartProcess("dotnet", arguments));
    }

    protected LabProcess Track(LabProcess process)
    {
        lock (_processes)
        {
            _processes.Add(process);
        }

        return process;
    }

    /// <summary>Kestrel logs "Now listening on" once its listening sockets are bound: from then on it accepts.</summary>
    protected static Task WaitUntilListeningAsync(LabProcess process, CancellationToken cancellationToken) =>
        process.WaitForOutputAsync("Now listening on", StartTimeout, cancellationToken);
}
