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

    private readonly LinkedList<Entry> _entries = new();
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
                return [.. _entries.Select(e => e.Count == 1
                    ? e.Text
                    : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{e.Text} (logged {e.Count} times in a row; this is the last)"))];
            }
        }
    }

    /// <param name="template">The message template ("{OriginalFormat}"), when the entry has one: entries of one template in a row are one line.</param>
    public void Add(LogLevel level, string category, EventId eventId, string message, Exception? exception, string? template = null)
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

        var key = (category, eventId.Id, level, template ?? message);
        lock (_lock)
        {
            // A retry loop (a failing health check every 100 ms) would otherwise push out everything before it.
            if (_entries.Last?.Value is { } last && last.Key == key)
            {
                _entries.Last.Value = last with { Text = text, Count = last.Count + 1 };
            }
            else
            {
                _entries.AddLast(new Entry(key, text, 1));
                while (_entries.Count > Capacity)
                {
                    _entries.RemoveFirst();
                }
            }
        }

        Added?.Invoke();
    }

    private sealed record Entry((string Category, int EventId, LogLevel Level, string Template) Key, string Text, int Count);

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
                var template = state is IReadOnlyList<KeyValuePair<string, object?>> values
                    ? values.FirstOrDefault(v => v.Key == "{OriginalFormat}").Value as string
                    : null;
                log.Add(logLevel, category, eventId, formatter(state, exception), exception, template);
            }
        }
    }
}
