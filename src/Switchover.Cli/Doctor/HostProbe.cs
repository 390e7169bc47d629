using System.Globalization;
using System.IO.Compression;
using Switchover.Cli.Doctor.Rules;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Cli.Doctor;

/// <summary>
/// Reads what doctor needs from this host and the current network namespace (run it under <c>ip netns exec</c> to
/// look at another): procfs and sysfs files, and the output of programs that only read (nft list, iptables-save,
/// modinfo, --version). Nothing is loaded, written or changed.
/// </summary>
internal sealed class HostProbe
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private readonly ICommandRunner _runner;
    private readonly string _root;
    private readonly Func<ProcessIdentity, bool> _isAlive;

    // internal for testing: a recording runner, a directory standing in for / (proc, sys, boot), a liveness stub.
    internal HostProbe(ICommandRunner runner, string root, Func<ProcessIdentity, bool> isAlive)
    {
        _runner = runner;
        _root = root;
        _isAlive = isAlive;
    }

    public static HostProbe Create() => new(CommandRunner.Instance, "/", p => p.IsAlive());

    public async Task<DoctorFacts> CollectAsync(string nftPath, string conntrackPath, NamespaceName? name, string stateRoot, CancellationToken cancellationToken)
    {
        var nft = await VersionAsync("nft", nftPath, cancellationToken).ConfigureAwait(false);
        var conntrack = await VersionAsync("conntrack", conntrackPath, cancellationToken).ConfigureAwait(false);

        string? json = null;
        string? rulesetError = null;
        Ruleset? parsed = null;
        if (nft.Version is not null)
        {
            var result = await TryRunAsync(Command.Create(nftPath, "-j", "list", "ruleset"), cancellationToken).ConfigureAwait(false);
            if (result is { ExitCode: 0 })
            {
                json = result.StandardOutput;
                try
                {
                    parsed = NftJsonReader.Read(json);
                }
                catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or KeyNotFoundException or InvalidOperationException)
                {
                    // The analysis reports it.
                }
            }
            else
            {
                rulesetError = result is null ? $"{nftPath} could not be started" : $"'{nftPath} -j list ruleset' exited with {result.ExitCode}: {ToolErrors.OneLine(result.StandardError.Trim())}";
            }
        }
        else
        {
            rulesetError = $"{nftPath} could not be run ({nft.Error})";
        }

        var legacy = ReadLines("proc/net/ip_tables_names");
        var legacy6 = ReadLines("proc/net/ip6_tables_names");
        return new DoctorFacts
        {
            Nft = nft,
            Conntrack = conntrack,
            RulesetJson = json,
            RulesetError = rulesetError,
            IptablesNft = parsed?.Tables.Any(t => t.Family == "ip" && t.HasXtExpressions) == true
                ? await DumpAsync("iptables-nft-save", cancellationToken).ConfigureAwait(false) : null,
            Ip6tablesNft = parsed?.Tables.Any(t => t.Family == "ip6" && t.HasXtExpressions) == true
                ? await DumpAsync("ip6tables-nft-save", cancellationToken).ConfigureAwait(false) : null,
            LegacyTables = legacy,
            Legacy6Tables = legacy6,
            IptablesLegacy = legacy.Count > 0 ? await DumpAsync("iptables-legacy-save", cancellationToken).ConfigureAwait(false) : null,
            Ip6tablesLegacy = legacy6.Count > 0 ? await DumpAsync("ip6tables-legacy-save", cancellationToken).ConfigureAwait(false) : null,
            Kernel = await KernelAsync(cancellationToken).ConfigureAwait(false),
            EffectiveUid = StatusField("Uid:") is { } uid && uid.Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries) is { Length: >= 2 } ids
                && int.TryParse(ids[1], NumberStyles.None, CultureInfo.InvariantCulture, out var euid) ? euid : null,
            EffectiveCapabilities = StatusField("CapEff:") is { } caps && ulong.TryParse(caps.Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var capEff) ? capEff : null,
            LocalPortRange = ReadText("proc/sys/net/ipv4/ip_local_port_range")?.Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries) is { Length: 2 } range
                && int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out var low)
                && int.TryParse(range[1], NumberStyles.None, CultureInfo.InvariantCulture, out var high) ? (low, high) : null,
            Namespace = name is null ? null : Namespace(name, stateRoot),
        };
    }

    private async Task<ToolFact> VersionAsync(string tool, string path, CancellationToken cancellationToken)
    {
        try
        {
            var result = await _runner.TryRunAsync(Command.Create(path, "--version") with { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
            var line = (result.StandardOutput + "\n" + result.StandardError).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
            return result.ExitCode == 0 && line is not null
                ? new ToolFact(tool, path, line, null)
                : new ToolFact(tool, path, null, $"'{path} --version' exited with {result.ExitCode}: {line ?? "(no output)"}");
        }
        catch (CommandNotFoundException e)
        {
            // Process.Start's own message also names the working directory; the errno text is what matters.
            var cause = e.InnerException is System.ComponentModel.Win32Exception w ? System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(w.NativeErrorCode) : e.Message;
            return new ToolFact(tool, path, null, cause, NotFound: true);
        }
        catch (CommandException e)
        {
            return new ToolFact(tool, path, null, e.Message);
        }
    }

    private async Task<CommandResult?> TryRunAsync(Command command, CancellationToken cancellationToken)
    {
        try
        {
            return await _runner.TryRunAsync(command with { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException)
        {
            return null;
        }
    }

    private async Task<IptablesDump> DumpAsync(string program, CancellationToken cancellationToken)
    {
        try
        {
            var result = await _runner.TryRunAsync(Command.Create(program) with { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
            return result.ExitCode == 0
                ? new IptablesDump(program, result.StandardOutput, null)
                : new IptablesDump(program, null, $"exited with {result.ExitCode}: {ToolErrors.OneLine(result.StandardError.Trim())}");
        }
        catch (CommandNotFoundException)
        {
            return new IptablesDump(program, null, "not installed");
        }
        catch (CommandException e)
        {
            return new IptablesDump(program, null, e.Message);
        }
    }

    private async Task<KernelFacts> KernelAsync(CancellationToken cancellationToken)
    {
        var release = ReadText("proc/sys/kernel/osrelease")?.Trim();
        var modules = ReadText("proc/modules");
        var sys = KernelCheck.Features.Select(f => f.Module).Where(m => Directory.Exists(PathOf("sys/module/" + m))).ToHashSet();
        var (config, configSource) = ReadConfig(release);
        var modinfo = new Dictionary<string, string?>();
        var modinfoMissing = false;
        if (modules is not null)
        {
            foreach (var feature in KernelCheck.Features)
            {
                var loaded = modules.Split('\n').Any(l => l.StartsWith(feature.Module + " ", StringComparison.Ordinal)) || sys.Contains(feature.Module);
                var configured = config is null ? null : KernelCheck.ConfigValue(config, feature.Config);
                if (loaded || modinfoMissing || configured is "y" || (config is not null && configured is null))
                {
                    continue;
                }

                try
                {
                    var result = await _runner.TryRunAsync(Command.Create("modinfo", "-n", feature.Module) with { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
                    modinfo[feature.Module] = result.ExitCode == 0 ? result.StandardOutput.Trim() : null;
                }
                catch (CommandNotFoundException)
                {
                    modinfoMissing = true;
                }
                catch (CommandException)
                {
                    // Leave it unasked: the analysis says it cannot tell.
                }
            }
        }

        return new KernelFacts
        {
            Release = release,
            ProcModules = modules,
            SysModules = sys,
            Config = config,
            ConfigSource = configSource,
            Modinfo = modinfo,
            ModinfoMissing = modinfoMissing,
            Ipv6 = Directory.Exists(PathOf("proc/sys/net/ipv6")),
            Ipv6Disabled = ReadText("proc/sys/net/ipv6/conf/all/disable_ipv6")?.Trim() == "1",
        };
    }

    private (string? Config, string? Source) ReadConfig(string? release)
    {
        var gz = PathOf("proc/config.gz");
        try
        {
            if (File.Exists(gz))
            {
                using var file = File.OpenRead(gz);
                using var unzip = new GZipStream(file, CompressionMode.Decompress);
                using var reader = new StreamReader(unzip);
                return (reader.ReadToEnd(), "/proc/config.gz");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            // Try /boot.
        }

        var boot = release is null ? null : "boot/config-" + release;
        return boot is not null && ReadText(boot) is { } text ? (text, "/" + boot) : (null, null);
    }

    private NamespaceFacts Namespace(NamespaceName name, string stateRoot)
    {
        var store = new StateStore(stateRoot, name);
        try
        {
            var state = store.ReadUnlocked();
            var alive = state?.Generations.ToDictionary(g => g.Id, g => _isAlive(g.Process)) ?? [];
            return new NamespaceFacts(name, store.Directory, state, null, alive);
        }
        catch (StateException e)
        {
            return new NamespaceFacts(name, store.Directory, null, e.Message, new Dictionary<long, bool>());
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return new NamespaceFacts(name, store.Directory, null,
                $"cannot read {store.StatePath}: {e.Message}. Run doctor as root, or pass --state-dir DIR.", new Dictionary<long, bool>());
        }
    }

    private string? StatusField(string field) =>
        ReadText("proc/self/status")?.Split('\n').FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal))?[field.Length..].Trim();

    private List<string> ReadLines(string path) =>
        ReadText(path)?.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList() ?? [];

    private string? ReadText(string path)
    {
        try
        {
            return File.ReadAllText(PathOf(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private string PathOf(string relative) => Path.Combine(_root, relative);
}
