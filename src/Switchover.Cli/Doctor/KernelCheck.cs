using System.Globalization;

namespace Switchover.Cli.Doctor;

/// <summary>Which steering needs a kernel feature.</summary>
internal enum FeatureUse
{
    Always,
    Tproxy,

    /// <summary>Tproxy, for IPv6 clients (only when the namespace has IPv6).</summary>
    TproxyIpv6,
    Redirect,
}

/// <param name="Module">The module name (as in /proc/modules and modinfo).</param>
/// <param name="Config">The kernel configuration symbol, without CONFIG_.</param>
internal sealed record KernelFeature(string Module, string Config, FeatureUse Use, string Purpose);

internal enum FeatureState
{
    Loaded,
    BuiltIn,

    /// <summary>Installed as a module, not loaded: nf_tables loads it when a rule first uses it.</summary>
    Loadable,
    Missing,
    Unknown,
}

/// <summary>The kernel's version and netfilter features, read without loading anything.</summary>
internal static class KernelCheck
{
    public static readonly IReadOnlyList<KernelFeature> Features =
    [
        new("nf_tables", "NF_TABLES", FeatureUse.Always, "nftables"),
        new("nf_conntrack", "NF_CONNTRACK", FeatureUse.Always, "connection tracking, which the drain reads"),
        new("nf_conntrack_netlink", "NF_CT_NETLINK", FeatureUse.Always, "'conntrack -L', with which the drain counts flows"),
        new("nft_ct", "NFT_CT", FeatureUse.Always, "ct expressions in the guard of the private ports"),
        new("nft_fib_inet", "NFT_FIB_INET", FeatureUse.Always, "'fib daddr type local': only local destinations are steered"),
        new("nft_tproxy", "NFT_TPROXY", FeatureUse.Tproxy, "the tproxy statement"),
        new("nf_tproxy_ipv4", "NF_TPROXY_IPV4", FeatureUse.Tproxy, "TPROXY for IPv4"),
        new("nf_tproxy_ipv6", "NF_TPROXY_IPV6", FeatureUse.TproxyIpv6, "TPROXY for IPv6"),
        new("nft_nat", "NFT_NAT", FeatureUse.Redirect, "NAT in nftables"),
        new("nft_redir", "NFT_REDIR", FeatureUse.Redirect, "the redirect statement"),
    ];

    // nft's tproxy statement came with 4.19; NAT in inet tables (which the Redirect table uses) with 5.2.
    private static readonly Version TproxyMinimum = new(4, 19);
    private static readonly Version RedirectMinimum = new(5, 2);

    public static IEnumerable<Finding> Check(KernelFacts kernel, Steering steering)
    {
        var findings = new List<Finding>();
        var version = ParseVersion(kernel.Release);
        var minimum = steering == Steering.Tproxy ? TproxyMinimum : RedirectMinimum;
        if (version is null)
        {
            findings.Add(new Finding("kernel", "version", Severity.Warning,
                $"cannot tell the kernel version ({kernel.Release ?? "/proc/sys/kernel/osrelease unreadable"})"));
        }
        else if (version < minimum)
        {
            findings.Add(new Finding("kernel", "version", Severity.Problem,
                $"kernel {kernel.Release} is older than {minimum}, which the {steering} steering needs",
                "run a newer kernel" + (steering == Steering.Tproxy ? "" : ", or use Steering=Tproxy (needs 4.19)")));
        }

        var present = new List<string>();
        foreach (var feature in Features)
        {
            var needed = feature.Use switch
            {
                FeatureUse.Always => true,
                FeatureUse.Tproxy => steering == Steering.Tproxy,
                FeatureUse.TproxyIpv6 => steering == Steering.Tproxy && kernel.Ipv6 && !kernel.Ipv6Disabled,
                _ => steering == Steering.Redirect,
            };
            var (state, source) = State(kernel, feature);
            switch (state)
            {
                case FeatureState.Loaded or FeatureState.BuiltIn or FeatureState.Loadable:
                    if (needed)
                    {
                        present.Add(state == FeatureState.Loadable ? feature.Module + " (loads on first use)" : feature.Module);
                    }

                    break;
                case FeatureState.Missing when needed:
                    findings.Add(new Finding("kernel-feature", feature.Module, Severity.Problem,
                        $"{feature.Module} ({feature.Purpose}) is missing: {source}",
                        Install(feature, kernel)));
                    break;
                case FeatureState.Missing:
                    var other = feature.Use == FeatureUse.Redirect ? "Redirect" : "Tproxy";
                    findings.Add(new Finding("kernel-feature", feature.Module, Severity.Info,
                        $"{feature.Module} ({feature.Purpose}) is missing ({source}); only the {other} steering needs it, this one does not"));
                    break;
                case FeatureState.Unknown when needed:
                    findings.Add(new Finding("kernel-feature", feature.Module, Severity.Warning,
                        $"cannot tell whether the kernel has {feature.Module} ({feature.Purpose}): {source}",
                        "install kmod (modinfo), or check CONFIG_" + feature.Config + " in the kernel's configuration"));
                    break;
            }
        }

        var how = kernel.ProcModules is null ? "built in (this kernel has no loadable modules)" : "loaded, built in or installed";
        var sources = new List<string>();
        if (kernel.ProcModules is not null)
        {
            sources.Add("/proc/modules");
        }

        sources.Add("/sys/module");
        if (kernel.ConfigSource is { } config)
        {
            sources.Add(config);
        }

        if (kernel.Modinfo.Count > 0)
        {
            sources.Add("modinfo");
        }

        if (present.Count > 0)
        {
            findings.Insert(0, new Finding("kernel", null, Severity.Ok,
                $"{kernel.Release ?? "kernel"}: {string.Join(", ", present)} {how}; read from {string.Join(", ", sources)}"));
        }

        if (!kernel.Ipv6)
        {
            findings.Add(new Finding("ipv6", null, Severity.Info, "this network namespace has no IPv6 (/proc/sys/net/ipv6 is missing): only IPv4 is steered"));
        }
        else if (kernel.Ipv6Disabled)
        {
            findings.Add(new Finding("ipv6", null, Severity.Info, "IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1): only IPv4 clients are checked"));
        }

        return findings;
    }

    /// <summary>
    /// Where a module is, from the cheapest and most certain source on: loaded (/proc/modules), present
    /// (/sys/module), the kernel configuration (y: built in, m: a module), modinfo (a file or "(builtin)").
    /// </summary>
    internal static (FeatureState State, string Source) State(KernelFacts kernel, KernelFeature feature)
    {
        if (kernel.ProcModules is { } modules && modules.Split('\n').Any(l => l.StartsWith(feature.Module + " ", StringComparison.Ordinal)))
        {
            return (FeatureState.Loaded, "/proc/modules");
        }

        if (kernel.SysModules.Contains(feature.Module))
        {
            return (FeatureState.Loaded, "/sys/module/" + feature.Module);
        }

        kernel.Modinfo.TryGetValue(feature.Module, out var modinfo);
        if (kernel.Config is { } config)
        {
            var value = ConfigValue(config, feature.Config);
            switch (value)
            {
                case "y":
                    return (FeatureState.BuiltIn, $"CONFIG_{feature.Config}=y");
                case "m" when kernel.ProcModules is null:
                    return (FeatureState.Missing, $"CONFIG_{feature.Config}=m, but this kernel cannot load modules");
                case "m" when kernel.Modinfo.ContainsKey(feature.Module) && modinfo is null:
                    return (FeatureState.Missing, $"CONFIG_{feature.Config}=m, but modinfo finds no {feature.Module} module for this kernel");
                case "m":
                    return (FeatureState.Loadable, $"CONFIG_{feature.Config}=m");
                default:
                    return (FeatureState.Missing, $"CONFIG_{feature.Config} is not set in {kernel.ConfigSource}");
            }
        }

        if (kernel.ProcModules is null)
        {
            return (FeatureState.Unknown, "the kernel has no loadable modules and no configuration to read (/proc/config.gz, /boot/config-RELEASE)");
        }

        if (kernel.Modinfo.ContainsKey(feature.Module))
        {
            return modinfo is null
                ? (FeatureState.Missing, $"not loaded, and modinfo finds no {feature.Module} module for kernel {kernel.Release}")
                : modinfo.Contains("(builtin)", StringComparison.Ordinal) ? (FeatureState.BuiltIn, "modinfo: (builtin)") : (FeatureState.Loadable, modinfo.Trim());
        }

        return (FeatureState.Unknown, kernel.ModinfoMissing ? "not loaded, and modinfo is not installed" : "not loaded, and modinfo was not asked");
    }

    internal static string? ConfigValue(string config, string symbol)
    {
        var prefix = "CONFIG_" + symbol + "=";
        foreach (var line in config.Split('\n'))
        {
            if (line.StartsWith(prefix, StringComparison.Ordinal))
            {
                return line[prefix.Length..].Trim();
            }
        }

        return null;
    }

    internal static Version? ParseVersion(string? release)
    {
        if (release is null)
        {
            return null;
        }

        var parts = release.Split('.', '-', '+');
        return parts.Length >= 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var major)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var minor)
            ? new Version(major, minor)
            : null;
    }

    private static string Install(KernelFeature feature, KernelFacts kernel) =>
        kernel.ProcModules is null
            ? $"this kernel has no loadable modules: use a kernel built with CONFIG_{feature.Config}"
            : $"install the modules of kernel {kernel.Release} (Debian: linux-image-{kernel.Release}; Ubuntu: also linux-modules-extra-{kernel.Release}), or a kernel with CONFIG_{feature.Config}";
}
