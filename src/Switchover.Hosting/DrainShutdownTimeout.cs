using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// The drain runs inside the host's shutdown (<see cref="HandoffService.StoppingAsync"/>), and Kestrel stops after it
/// with what is left of the host's ShutdownTimeout: once that has passed, Kestrel aborts every connection still open.
/// A ShutdownTimeout shorter than the drain's bound (30 s by default, against 140 s under
/// <see cref="IdleConnectionPolicy.WaitForClient"/>) would cut the drain short and close idle connections under their
/// clients, which is what the policy exists to avoid; so it is raised to the bound plus <see cref="StopMargin"/>, and
/// HandoffService logs it. A longer ShutdownTimeout is left as it is.
/// </summary>
internal sealed class DrainShutdownTimeout(SwitchoverConfiguration configuration) : IPostConfigureOptions<HostOptions>
{
    /// <summary>After the drain: Kestrel's own graceful stop of what is still open, and the other hosted services' stop.</summary>
    internal static readonly TimeSpan StopMargin = TimeSpan.FromSeconds(15);

    public void PostConfigure(string? name, HostOptions options)
    {
        if (!configuration.Enabled)
        {
            return;
        }

        var needed = configuration.DrainBound + StopMargin;
        if (options.ShutdownTimeout < needed && options.ShutdownTimeout != Timeout.InfiniteTimeSpan)
        {
            configuration.ShutdownTimeoutRaised = (options.ShutdownTimeout, needed);
            options.ShutdownTimeout = needed;
        }
    }
}
