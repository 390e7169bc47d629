using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>Options shared by several commands. Each call returns a new instance: an option belongs to one command.</summary>
internal static class CommonOptions
{
    public static Option<NamespaceName> Namespace(string description, bool required) => new("--namespace", "-n")
    {
        Description = description,
        HelpName = "NAME",
        Required = required,
        CustomParser = ParseNamespace,
    };

    public static Option<string> StateDirectory() => new("--state-dir")
    {
        Description = "The state root that holds one directory per namespace.",
        HelpName = "DIR",
        DefaultValueFactory = _ => StateStore.DefaultRoot,
    };

    /// <summary>`--encapsulation gre|udp`: how the tunnel's GRE packets travel; both ends must give the same.</summary>
    public static Option<Switchover.Migration.Gre.TunnelEncapsulation> Encapsulation() => new("--encapsulation")
    {
        Description = "How the GRE packets travel, the same on both hosts: gre (IP protocol 47) or udp (GRE in UDP, RFC 8086, UDP port 4754 " +
            "at both ends; the kernel's GRE speaks it as FOU). udp lets the userspace dataplane hand the kernel 64 KiB at a time: several " +
            "times faster. Default: gre.",
        HelpName = "gre|udp",
        DefaultValueFactory = _ => Switchover.Migration.Gre.TunnelEncapsulation.Gre,
        CustomParser = ParseEncapsulation,
    };

    internal static Switchover.Migration.Gre.TunnelEncapsulation ParseEncapsulation(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
        switch (text)
        {
            case Switchover.Migration.Gre.TunnelEncapsulationNames.Gre:
                return Switchover.Migration.Gre.TunnelEncapsulation.Gre;
            case Switchover.Migration.Gre.TunnelEncapsulationNames.Udp:
                return Switchover.Migration.Gre.TunnelEncapsulation.GreInUdp;
            default:
                result.AddError($"--encapsulation '{text}' is not known: use gre (IP protocol 47) or udp (GRE in UDP, port " +
                    $"{Switchover.Migration.Gre.TunnelOptions.GreInUdpPort}), the same on both hosts.");
                return default;
        }
    }

    /// <summary>
    /// The name ends up in an nft table name and a path, so it is validated while parsing: an invalid one is a
    /// usage error (exit code 2) and no command runs.
    /// </summary>
    internal static NamespaceName? ParseNamespace(System.CommandLine.Parsing.ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
        var error = text.Length == 0
            ? "--namespace is empty; give the name of a namespace, made of [a-z0-9_-]."
            : NamespaceName.Validate(text);
        if (error is not null)
        {
            result.AddError(error);
            return null;
        }

        return NamespaceName.Parse(text);
    }

    /// <summary>A positive duration: "90s", "2m", "500ms", "1h", "90" (seconds) or "00:01:30"; the error names the option.</summary>
    internal static TimeSpan ParseDuration(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
        if (TryParseDuration(text) is { } value && value > TimeSpan.Zero)
        {
            return value;
        }

        var option = (result.Parent as OptionResult)?.Option.Name ?? "the duration";
        result.AddError($"{option} '{text}' is not a duration: write e.g. 90s, 2m, 500ms or 00:01:30.");
        return default;
    }

    internal static TimeSpan? TryParseDuration(string text)
    {
        text = text.Trim();
        (string Suffix, double Seconds)[] units = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)];
        foreach (var (suffix, seconds) in units)
        {
            if (text.EndsWith(suffix, StringComparison.Ordinal)
                && double.TryParse(text[..^suffix.Length], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var count))
            {
                return TimeSpan.FromSeconds(count * seconds);
            }
        }

        if (double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var plain))
        {
            return TimeSpan.FromSeconds(plain);
        }

        return text.Contains(':', StringComparison.Ordinal) && TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var span) ? span : null;
    }
}
