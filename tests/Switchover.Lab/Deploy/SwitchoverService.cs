using System.Globalization;
using System.Text.RegularExpressions;
using Switchover.State;

namespace Switchover.Lab;

/// <summary>A generation launched by <see cref="SwitchoverService"/>.</summary>
/// <param name="LaunchToServing">As the generation logged it: from its process start to its takeover.</param>
public sealed record LaunchedGeneration(LabProcess Process, string Text, TimeSpan LaunchToServing)
{
    /// <summary>How long the generation's nft transaction took, as it logged it; null when the log line did not say.</summary>
    public TimeSpan? RuleTransaction { get; init; }

    /// <summary>The generation's log line that announced the takeover.</summary>
    public string? TakeoverLine { get; init; }
}

/// <summary>
/// One Switchover namespace of a server app inside a network namespace: launches generations of it (each launch is
/// a deploy), runs the CLI there, reads its state and ruleset, and leaves nothing behind.
/// </summary>
public sealed partial class SwitchoverService : IAsyncDisposable
{
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(40);
    private readonly List<LabProcess> _processes = [];

    public SwitchoverService(NetworkNamespace host, string? appPath = null, int publicPort = 8080, string? name = null)
    {
        Host = host;
        AppPath = appPath ?? Artifacts.EchoServer;
        PublicPort = publicPort;
        Name = name ?? "t" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 5));
        Urls = $"http://*:{publicPort.ToString(CultureInfo.InvariantCulture)}";
        _networkNamespace = host.Inode;
    }

    // Read once: the state directory stays known after the network namespace is deleted.
    private readonly ulong _networkNamespace;

    public NetworkNamespace Host { get; }

    public string AppPath { get; }

    public int PublicPort { get; }

    /// <summary>The <c>--urls</c> every generation gets; null gives none (for endpoints from the environment or code). Default http://*:PORT.</summary>
    public string? Urls { get; init; }

    /// <summary>
    /// The Switchover:RollbackWindow every generation gets: 2 s by default, so that tests that wait for a superseded
    /// generation to exit do not wait out the app's default (10 s); null leaves the app's own. Tests of the window set it.
    /// </summary>
    public TimeSpan? RollbackWindow { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>The Switchover namespace: unique per service, so tests do not share state in /run/switchover.</summary>
    public string Name { get; }

    /// <summary>
    /// A program and its arguments that every generation is started through (it must exec the rest of its command
    /// line, so that the generation keeps its pid), e.g. setpriv to drop the user and every capability. Default: none.
    /// </summary>
    public IReadOnlyList<string> RunAs { get; init; } = [];

    /// <summary>Arguments every generation gets, before those of one launch. Default: none.</summary>
    public IReadOnlyList<string> Arguments { get; init; } = [];

    /// <summary>The state root; a root other than /run/switchover is passed to every generation. Default: /run/switchover.</summary>
    public string StateRoot { get; init; } = StateStore.DefaultRoot;

    /// <summary>The namespace's state as the generations in <see cref="Host"/> keep it (keyed by its network namespace).</summary>
    public StateStore Store => new(StateRoot, NamespaceName.Parse(Name), _networkNamespace);

    public string StateDirectory => Store.Directory;

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

    /// <summary>Starts a generation and returns at once.</summary>
    public LabProcess Launch(string text, IEnumerable<string>? extraArguments = null, string? appPath = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var app = appPath ?? AppPath;
        string[] arguments =
        [
            app,
            .. Urls is null ? Array.Empty<string>() : ["--urls", Urls],
            $"--Switchover:Namespace={Name}",
            $"--Text={text}",
            .. RollbackWindow is { } window ? [$"--Switchover:RollbackWindow={window.ToString("c", CultureInfo.InvariantCulture)}"] : Array.Empty<string>(),
            "--contentRoot", System.IO.Path.GetDirectoryName(app)!,
            .. StateRoot == StateStore.DefaultRoot ? Array.Empty<string>() : [$"--Switchover:StateDirectory={StateRoot}"],
            .. Arguments,
            .. extraArguments ?? [],
        ];
        var process = RunAs.Count == 0
            ? Host.StartProcess("dotnet", arguments, environment)
            : Host.StartProcess(RunAs[0], [.. RunAs.Skip(1), Dotnet, .. arguments], environment);
        lock (_processes)
        {
            _processes.Add(process);
        }

        return process;
    }

    /// <summary>Launches a generation and waits until it has taken over the public port.</summary>
    public async Task<LaunchedGeneration> DeployAsync(
        string text, TimeSpan timeout, CancellationToken cancellationToken, IEnumerable<string>? extraArguments = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var process = Launch(text, extraArguments, environment: environment);
        string line;
        try
        {
            line = await process.WaitForOutputAsync("launch to serving", timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw new InvalidOperationException($"Generation '{text}' (pid {process.Pid}) did not take over: {e.Message}\n{process.Output}", e);
        }

        var match = LaunchToServing().Match(line);
        var launchToServing = match.Success ? TimeSpan.FromMilliseconds(double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture)) : TimeSpan.Zero;
        var transaction = RuleTransaction().Match(line);
        return new LaunchedGeneration(process, text, launchToServing)
        {
            RuleTransaction = transaction.Success
                ? TimeSpan.FromMilliseconds(double.Parse(transaction.Groups[1].Value, CultureInfo.InvariantCulture))
                : null,
            TakeoverLine = line,
        };
    }

    /// <summary>
    /// Waits until <paramref name="generation"/> has exited, or has taken over and is no longer recorded Starting (it
    /// finished its step: took over, or failed and left); false when neither happened within <paramref name="within"/>.
    /// </summary>
    public async Task<bool> SettleAsync(LabProcess generation, TimeSpan within, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(generation);
        var deadline = DateTime.UtcNow + within;
        while (DateTime.UtcNow < deadline)
        {
            var starting = ReadState()?.Generations.Any(g => g.Pid == generation.Pid && g.State == GenerationState.Starting) ?? false;
            if (generation.HasExited || (!starting && generation.Output.Contains("launch to serving", StringComparison.Ordinal)))
            {
                return true;
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        return false;
    }

    /// <summary>Runs the switchover CLI inside the network namespace.</summary>
    public Task<CommandOutput> CliAsync(CancellationToken cancellationToken, params string[] arguments) =>
        Host.TryRunAsync("dotnet", [Artifacts.Cli, .. arguments], cancellationToken);

    /// <summary>The namespace's state as the CLI and the generations see it, or null when there is none.</summary>
    public NamespaceState? ReadState() => Store.ReadUnlocked();

    /// <summary>The handoff invariant of this namespace now (see <see cref="HandoffInvariant"/>).</summary>
    public Task<InvariantReport> CheckInvariantAsync(CancellationToken cancellationToken) =>
        HandoffInvariant.CheckAsync(Host, Name, cancellationToken, StateRoot);

    /// <summary>Waits up to <paramref name="within"/> for the handoff invariant to hold; returns the last report.</summary>
    public Task<InvariantReport> WaitForInvariantAsync(TimeSpan within, CancellationToken cancellationToken) =>
        HandoffInvariant.WaitUntilHoldsAsync(Host, Name, within, cancellationToken, StateRoot);

    /// <summary>The dotnet host running this process, for the generations started through <see cref="RunAs"/>: the same runtime as without.</summary>
    private static string Dotnet => Environment.ProcessPath is { } host && System.IO.Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet";

    public async Task<string> RulesetAsync(CancellationToken cancellationToken) =>
        (await Host.RunAsync("nft", ["list", "ruleset"], cancellationToken).ConfigureAwait(false)).StandardOutput;

    /// <summary>Our table as nft lists it, or null when it does not exist.</summary>
    public async Task<string?> TableAsync(CancellationToken cancellationToken)
    {
        var result = await Host.TryRunAsync("nft", ["list", "table", "inet", "switchover_" + Name], cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0 ? result.StandardOutput : null;
    }

    /// <summary>Stops every generation still running (SIGTERM, then SIGKILL) and removes any state left.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var process in Processes.Where(p => !p.HasExited))
        {
            process.SendSignal(Signals.Terminate);
        }

        foreach (var process in Processes)
        {
            try
            {
                await process.Exited.WaitAsync(StopTimeout).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                await Console.Error.WriteLineAsync($"{process} did not stop within {StopTimeout.TotalSeconds} s of SIGTERM; killing it.").ConfigureAwait(false);
            }

            await process.DisposeAsync().ConfigureAwait(false);
        }

        if (Directory.Exists(StateDirectory))
        {
            Directory.Delete(StateDirectory, recursive: true);
        }
    }

    [GeneratedRegex(@"launch to serving (\d+) ms")]
    private static partial Regex LaunchToServing();

    [GeneratedRegex(@"rule transaction (\d+(?:\.\d+)?) ms")]
    private static partial Regex RuleTransaction();
}
