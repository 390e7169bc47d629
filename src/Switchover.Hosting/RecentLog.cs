using Microsoft.Extensions.Logging;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// The generation's last log entries, as one line each, for <c>switchover deploy</c> to show when the generation did
/// not take over: deploy does not read the generation's output (it goes where deploy's own goes, e.g. the journal).
/// </summary>
internal sealed class RecentLog
{
    private const int MaxEntryLength = 2000;

    private readonly Queue<string> _lines = new();
    private readonly Lock _lock = new();

    /// <summary>Raised after each entry, outside the lock.</summary>
    public event Action? Added;

    public int Capacity { get; init; } = OutcomeFile.MaxLogLines;

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_lock)
            {
                return [.. _lines];
            }
        }
    }

    public void Add(LogLevel level, string category, EventId eventId, string message, Exception? exception)
    {
        var text = $"{Level(level)}: {category}[{eventId.Id}] {message}";
        if (exception is not null && !message.Contains(exception.Message, StringComparison.Ordinal))
        {
            text += $" ({exception.GetType().Name}: {exception.Message})";
        }

        if (text.Length > MaxEntryLength)
        {
            text = text[..MaxEntryLength] + "...";
        }

        lock (_lock)
        {
            _lines.Enqueue(text);
            while (_lines.Count > Capacity)
            {
                _lines.Dequeue();
            }
        }

        Added?.Invoke();
    }

    // The console logger's abbreviations, so the lines read as they do in the journal.
    private static string Level(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => level.ToString(),
    };
}

/// <summary>Feeds <see cref="RecentLog"/>; the app's logging filters (Logging:LogLevel) apply to it as to the console.</summary>
[ProviderAlias("SwitchoverRecent")]
internal sealed class RecentLogProvider(RecentLog log) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new RecentLogger(log, categoryName);

    public void Dispose()
    {
    }

    private sealed class RecentLogger(RecentLog log, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                log.Add(logLevel, category, eventId, formatter(state, exception), exception);
            }
        }
    }
}
