using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Reports this generation's outcome to the <c>switchover deploy</c> that launched it, through the file deploy named
/// in <see cref="OutcomeFile.EnvironmentVariable"/>; does nothing for a generation started any other way. While the
/// generation starts, the file is rewritten with each log entry, so that deploy can show the last lines of a
/// generation that crashed before it could say why; once it took over or failed, the file holds that, for good.
/// </summary>
internal sealed class DeployOutcome : IDisposable
{
    private readonly RecentLog _log;
    private readonly string? _path;
    private readonly Lock _lock = new();
    private string? _namespace;
    private long? _generationId;
    private bool _final;
    private bool _writeFailed;

    public DeployOutcome(RecentLog log)
        : this(log, TakeFromEnvironment())
    {
    }

    // internal for testing: the outcome file, instead of the one the environment names.
    internal DeployOutcome(RecentLog log, string? path)
    {
        _log = log;
        _path = path;
        if (_path is not null)
        {
            _log.Added += OnLogAdded;
            Write(OutcomeKind.Starting, null, null);
        }
    }

    /// <summary>True when a deploy waits for this generation.</summary>
    public bool IsRequested => _path is not null;

    /// <summary>Why the outcome could not be written, once it could not (null while it could).</summary>
    public string? WriteError { get; private set; }

    public void Registered(NamespaceName name, long generationId)
    {
        lock (_lock)
        {
            _namespace = name.Value;
            _generationId = generationId;
        }

        Write(OutcomeKind.Starting, null, null);
    }

    public void TookOver(double launchToServingMs) => Write(OutcomeKind.TookOver, null, launchToServingMs);

    public void Failed(OutcomeKind kind, string reason) => Write(kind, reason, null);

    public void Dispose()
    {
        if (_path is not null)
        {
            _log.Added -= OnLogAdded;
        }
    }

    private static string? TakeFromEnvironment()
    {
        var path = Environment.GetEnvironmentVariable(OutcomeFile.EnvironmentVariable);

        // Deploy waits for this process, not for the processes the app itself starts.
        Environment.SetEnvironmentVariable(OutcomeFile.EnvironmentVariable, null);
        return path is { Length: > 0 } && Path.IsPathFullyQualified(path) ? path : null;
    }

    private void OnLogAdded() => Write(OutcomeKind.Starting, null, null);

    private void Write(OutcomeKind kind, string? reason, double? launchToServingMs)
    {
        if (_path is null)
        {
            return;
        }

        lock (_lock)
        {
            // The first final outcome stands; what the generation logs afterwards (its shutdown) does not change it.
            if (_final || _writeFailed)
            {
                return;
            }

            _final = kind != OutcomeKind.Starting;
            var outcome = new GenerationOutcome(kind, Environment.ProcessId, _namespace, _generationId, reason, launchToServingMs,
                _log.Lines, DateTimeOffset.UtcNow);
            try
            {
                OutcomeFile.Write(_path, outcome);
            }
            catch (StateException e)
            {
                // Not logged from here: this runs inside the logger. HandoffService reports it.
                _writeFailed = true;
                WriteError = e.Message;
            }
        }
    }
}
