namespace Switchover.Migration.Gre;

/// <summary>Creates the dataplane for a tunnel: the one asked for, or the kernel's where it has GRE.</summary>
public static class TunnelDataplane
{
    /// <summary>A dataplane of the given kind, not yet started.</summary>
    public static ITunnelDataplane Create(TunnelOptions options, GreDataplaneKind kind) => kind switch
    {
        GreDataplaneKind.Kernel => new KernelGreDataplane(options),
        GreDataplaneKind.Userspace => new UserspaceGreDataplane(options),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Use Kernel or Userspace."),
    };

    /// <summary>Kernel GRE when <see cref="GreSupport.DetectAsync(CancellationToken)"/> finds it for the outer family (and FOU for GRE in UDP), else userspace. Not yet started.</summary>
    public static async Task<ITunnelDataplane> CreateDetectedAsync(TunnelOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var support = await GreSupport.DetectAsync(cancellationToken).ConfigureAwait(false);
        return Create(options, support.DataplaneFor(options.OuterFamily, options.Encapsulation));
    }
}
