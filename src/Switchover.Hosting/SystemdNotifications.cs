using System.Globalization;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Switchover.Hosting.Interop;
using Switchover.State;

namespace Switchover.Hosting;

/// <summary>
/// Tells systemd which generation is the service (a unit with <c>Type=notify</c> and <c>NotifyAccess=all</c>); a
/// no-op outside systemd (NOTIFY_SOCKET unset).
/// <list type="bullet">
/// <item>A generation that took over sends <c>MAINPID=</c> its pid and <c>READY=1</c>, after the takeover transaction:
/// systemd then follows the new generation, and the old main process draining and exiting no longer stops the unit
/// (with <c>KillMode=control-group</c> that would kill the new generation too).</item>
/// <item>One that starts while another generation of its namespace is active is a reload: it sends <c>RELOADING=1</c>
/// with <c>MONOTONIC_USEC=</c> first, so that <c>Type=notify-reload</c> (systemd 253) sees the reload begin after it
/// asked for it, and <c>ExecReload=</c> (systemd 252) is not confused either. If it does not take over, it sends
/// <c>READY=1</c> with the pid of the generation that still serves, and <c>STATUS=reload failed: ...</c>.</item>
/// <item><c>STOPPING=1</c> only when the last generation of the namespace leaves, with no successor.</item>
/// </list>
/// The datagrams go through Microsoft.Extensions.Hosting.Systemd's <see cref="SystemdNotifier"/>. Its
/// <c>UseSystemd()</c> is deliberately not used: its lifetime sends <c>READY=1</c> when the host has started and
/// <c>STOPPING=1</c> whenever the host stops. For a generation both are wrong: it is ready only once it has taken over
/// (one that fails its health check must not report ready), and a superseded generation that stops is not the service
/// stopping (<c>STOPPING=1</c> while the unit runs makes systemd stop the unit, and with it the new generation).
/// </summary>
internal sealed class SystemdNotifications
{
    private const int MaxReasonLength = 400;

    private readonly ISystemdNotifier _notifier;
    private readonly ILogger _logger;
    private readonly Func<ProcessIdentity, bool> _isAlive;
    private readonly int _pid;
    private GenerationRecord? _reloadingFrom;
    private int _failuresLogged;

    public SystemdNotifications(ILogger<SystemdNotifications> logger)
        : this(new SystemdNotifier(), logger)
    {
    }

    // internal for testing: the notifier (made while NOTIFY_SOCKET named the test's socket), which processes count
    // as alive, and this generation's pid.
    internal SystemdNotifications(ISystemdNotifier notifier, ILogger logger, Func<ProcessIdentity, bool>? isAlive = null, int? pid = null)
    {
        _notifier = notifier;
        _logger = logger;
        _isAlive = isAlive ?? (p => p.IsAlive());
        _pid = pid ?? Environment.ProcessId;
    }

    /// <summary>True under systemd (NOTIFY_SOCKET was set when this process started).</summary>
    public bool IsEnabled => _notifier.IsEnabled;

    /// <summary>True once <see cref="Starting"/> found another generation serving: this generation is a reload.</summary>
    public bool IsReload => _reloadingFrom is not null;

    /// <summary>
    /// The generation begins its handoff. <paramref name="state"/> is the namespace as it was before it registered;
    /// when another generation of it is active, this is a reload, and systemd is told so.
    /// </summary>
    public void Starting(NamespaceState? state)
    {
        if (!IsEnabled || LiveActive(state) is not { } active)
        {
            return;
        }

        _reloadingFrom = active;
        Send(string.Create(CultureInfo.InvariantCulture,
            $"RELOADING=1\nMONOTONIC_USEC={MonotonicClock.NowMicroseconds()}\nSTATUS=a new generation is starting; generation {active.Id} (pid {active.Pid}) serves"));
    }

    /// <summary>The takeover transaction has committed: this process is the service now.</summary>
    public void TookOver(GenerationRecord self, NamespaceState? state)
    {
        if (!IsEnabled)
        {
            return;
        }

        // MAINPID and READY in one datagram: systemd applies them together, so there is no moment at which it
        // considers the reload done with the old main pid.
        Send(string.Create(CultureInfo.InvariantCulture, $"MAINPID={_pid}\nREADY=1\nSTATUS={Describe(state, self)}"));
    }

    /// <summary>
    /// This generation will not take over and exits. In a reload, systemd gets READY=1 again with the pid of the
    /// generation that still serves, so the unit stays active, and the reason in its status.
    /// </summary>
    public void DidNotTakeOver(string reason, NamespaceState? state)
    {
        if (!IsEnabled)
        {
            return;
        }

        var why = OneLine(reason);
        if (_reloadingFrom is null)
        {
            Send($"STATUS=start failed: {why}");
            return;
        }

        var serving = LiveActive(state) ?? (_isAlive(_reloadingFrom.Process) ? _reloadingFrom : null);
        Send(serving is null
            ? $"STATUS=reload failed: {why}; no generation serves"
            : string.Create(CultureInfo.InvariantCulture, $"READY=1\nMAINPID={serving.Pid}\nSTATUS=reload failed: {why}"));
    }

    /// <summary>This generation left its namespace; <paramref name="last"/>: no generation is left, the service stops.</summary>
    public void Left(bool last, NamespaceState? remaining)
    {
        if (IsEnabled)
        {
            Send(last ? "STOPPING=1\nSTATUS=stopped: no generation left" : $"STATUS={Describe(remaining, null)}");
        }
    }

    /// <summary>Switchover:Mode=Disabled: one process is the service, as with UseSystemd().</summary>
    public void ReadyWithoutHandoff()
    {
        if (IsEnabled)
        {
            Send(string.Create(CultureInfo.InvariantCulture, $"MAINPID={_pid}\nREADY=1\nSTATUS=serving (Switchover disabled)"));
        }
    }

    /// <inheritdoc cref="ReadyWithoutHandoff"/>
    public void StoppingWithoutHandoff()
    {
        if (IsEnabled)
        {
            Send("STOPPING=1");
        }
    }

    /// <summary>"generation 7 active, 1 draining", from the state (or from this generation when the state cannot be read).</summary>
    internal string Describe(NamespaceState? state, GenerationRecord? self)
    {
        var live = state?.Generations.Where(g => g.Pid == _pid || _isAlive(g.Process)).ToList() ?? [];
        var active = live.Where(g => g.State == GenerationState.Active).MaxBy(g => g.Id) ?? (self is null ? null : self with { State = GenerationState.Active });
        var draining = live.Count(g => g.State == GenerationState.Draining);
        var starting = live.Count(g => g.State == GenerationState.Starting);
        var text = active is null ? "no generation active" : string.Create(CultureInfo.InvariantCulture, $"generation {active.Id} active");
        text += string.Create(CultureInfo.InvariantCulture, $", {draining} draining");
        return starting > 0 ? text + string.Create(CultureInfo.InvariantCulture, $", {starting} starting") : text;
    }

    private GenerationRecord? LiveActive(NamespaceState? state) =>
        state?.Generations.Where(g => g.State == GenerationState.Active && g.Pid != _pid && _isAlive(g.Process)).MaxBy(g => g.Id);

    private static string OneLine(string text)
    {
        var line = string.Join("; ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return line.Length <= MaxReasonLength ? line : line[..MaxReasonLength] + "...";
    }

    private void Send(string message)
    {
        try
        {
            _notifier.Notify(new ServiceState(message));
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or ObjectDisposedException)
        {
            // systemd going away (or a NOTIFY_SOCKET left over from a parent) must not stop a handoff.
            if (Interlocked.Increment(ref _failuresLogged) <= 3)
            {
                Log.SystemdNotifyFailed(_logger, message.Split('\n')[0], e.Message);
            }
        }
    }
}
