using System.Globalization;
using Switchover.Netfilter;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>
/// Gathers what <c>switchover status</c> shows: the state files (read without the lock: status never blocks a deploy),
/// the table's presence from nft, and per-port flow counts from conntrack. A failing tool is reported once and
/// leaves its fields unknown; the rest is still collected.
/// </summary>
internal sealed class StatusCollector
{
    private readonly NftClient _nft;
    private readonly string _nftPath;
    private readonly ConntrackClient _conntrack;
    private readonly string _conntrackPath;
    private readonly TimeProvider _time;
    private readonly Func<ProcessIdentity, bool> _isAlive;

    // internal for testing: a recording runner, a fixed clock and a liveness stub replace the machine.
    internal StatusCollector(ICommandRunner runner, string nftPath, string conntrackPath, TimeProvider time, Func<ProcessIdentity, bool> isAlive)
    {
        _nft = new NftClient(runner, nftPath);
        _nftPath = nftPath;
        _conntrack = new ConntrackClient(runner, conntrackPath);
        _conntrackPath = conntrackPath;
        _time = time;
        _isAlive = isAlive;
    }

    public static StatusCollector Create(string nftPath, string conntrackPath) =>
        new(CommandRunner.Instance, nftPath, conntrackPath, TimeProvider.System, p => p.IsAlive());

    /// <param name="only">One namespace, or null for every namespace that has a directory under <paramref name="stateRoot"/>.</param>
    public async Task<StatusReport> CollectAsync(string stateRoot, NamespaceName? only, CancellationToken cancellationToken)
    {
        var run = new Run(this, stateRoot);
        var names = only is null ? run.Discover() : [only];
        var namespaces = new List<NamespaceStatus>();
        foreach (var name in names)
        {
            var status = await run.CollectAsync(name, cancellationToken).ConfigureAwait(false);
            if (status is not null)
            {
                namespaces.Add(status);
            }
        }

        if (only is null && names.Count == 0 && run.Errors.Count == 0)
        {
            run.Errors.Add(new StatusError(null, $"no namespace has state under {stateRoot}"));
        }

        return new StatusReport(StatusReport.CurrentVersion, stateRoot, namespaces, run.Errors);
    }

    internal static string FormatEndpoint(PortMapping port) => "tcp/" + port.Public;

    private static GenerationStatusKind Kind(GenerationState state) => state switch
    {
        GenerationState.Starting => GenerationStatusKind.Starting,
        GenerationState.Active => GenerationStatusKind.Active,
        GenerationState.Draining => GenerationStatusKind.Draining,
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, "Unknown generation state."),
    };

    /// <summary>One collection: the errors found so far, and whether each tool still deserves to be asked.</summary>
    private sealed class Run(StatusCollector owner, string stateRoot)
    {
        private bool _nftFailed;
        private bool _conntrackFailed;

        public List<StatusError> Errors { get; } = [];

        public IReadOnlyList<NamespaceName> Discover()
        {
            try
            {
                // Only this network namespace's: another's table cannot be read from here, and the same name may run
                // there independently. State whose network namespace is gone goes first.
                StateStore.RemoveGoneNetworkNamespaces(stateRoot);
                return [.. StateStore.List(stateRoot).Where(e => e.NetworkNamespace == NetworkNamespaces.Current).Select(e => e.Name)];
            }
            catch (DirectoryNotFoundException)
            {
                Errors.Add(new StatusError(null, $"no namespace has state under {stateRoot} (the directory does not exist)"));
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                Errors.Add(new StatusError(null, $"cannot list {stateRoot}: {e.Message}. Run switchover as root, or pass --state-dir DIR."));
            }

            return [];
        }

        public async Task<NamespaceStatus?> CollectAsync(NamespaceName name, CancellationToken cancellationToken)
        {
            var store = new StateStore(stateRoot, name);
            NamespaceState? state;
            try
            {
                state = store.ReadUnlocked();
            }
            catch (StateException e)
            {
                Errors.Add(new StatusError(name.Value, e.Message));
                return null;
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                Errors.Add(new StatusError(name.Value,
                    $"cannot read {store.StatePath}: {e.Message}. Run switchover as root, or pass --state-dir DIR."));
                return null;
            }

            var tablePresent = await TablePresentAsync(name, cancellationToken).ConfigureAwait(false);
            if (state is null)
            {
                var message = $"namespace '{name}' has no state under {stateRoot}";
                if (tablePresent == true)
                {
                    message += $", but its nft table inet {name.TableName} exists; remove it with 'switchover cleanup --namespace {name}'";
                }

                Errors.Add(new StatusError(name.Value, message));
                return null;
            }

            var active = state.Active;
            var endpoints = active is null
                ? []
                : active.Ports.OrderBy(p => p.PublicPort)
                    .Select(p => new PublicEndpointStatus(FormatEndpoint(p), p.PublicPort, p.PrivatePort, active.Id))
                    .ToList();
            var generations = new List<GenerationStatus>();
            foreach (var generation in state.Generations.OrderByDescending(g => g.Id))
            {
                generations.Add(await CollectAsync(generation, cancellationToken).ConfigureAwait(false));
            }

            return new NamespaceStatus(name.Value, store.Directory, $"inet {name.TableName}", tablePresent, active?.Id, endpoints, generations);
        }

        private async Task<GenerationStatus> CollectAsync(GenerationRecord generation, CancellationToken cancellationToken)
        {
            var alive = owner._isAlive(generation.Process);
            var ports = new List<PortStatus>();
            foreach (var port in generation.Ports.OrderBy(p => p.PublicPort))
            {
                // A dead generation's private port may already belong to someone else: its flows are not ours to count.
                var counts = alive ? await CountAsync(generation, port, cancellationToken).ConfigureAwait(false) : null;
                ports.Add(new PortStatus(port.PublicPort, port.PrivatePort, counts));
            }

            var age = owner._time.GetUtcNow() - generation.StartedAt;
            var recorded = Kind(generation.State);
            return new GenerationStatus(generation.Id, generation.Pid, alive ? recorded : GenerationStatusKind.Dead, recorded,
                generation.StartedAt, Math.Max(0, (long)age.TotalSeconds), ports)
            {
                RollbackUntil = generation.CanRollBackTo(owner._time.GetUtcNow()) ? generation.RollbackUntil : null,
                SignalError = generation.SignalError,
            };
        }

        private async Task<bool?> TablePresentAsync(NamespaceName name, CancellationToken cancellationToken)
        {
            if (_nftFailed)
            {
                return null;
            }

            try
            {
                return await owner._nft.ListTableAsync(name, cancellationToken).ConfigureAwait(false) is not null;
            }
            catch (NftException e)
            {
                _nftFailed = true;
                Errors.Add(new StatusError(null, ToolErrors.Nft(e, owner._nftPath, "read the ruleset")));
                return null;
            }
        }

        private async Task<ConnectionCounts?> CountAsync(GenerationRecord generation, PortMapping port, CancellationToken cancellationToken)
        {
            if (_conntrackFailed)
            {
                return null;
            }

            try
            {
                var flows = await owner._conntrack.CountAsync(generation, port, cancellationToken).ConfigureAwait(false);
                return new ConnectionCounts(flows.Established, flows.HalfOpen, flows.Closing, flows.Total);
            }
            catch (Exception e) when (e is CommandException or InvalidOperationException { InnerException: CommandNotFoundException })
            {
                _conntrackFailed = true;
                Errors.Add(new StatusError(null, ToolErrors.Conntrack(e, owner._conntrackPath)));
                return null;
            }
        }
    }
}
