using System.IO.Compression;
using System.Text;
using Switchover.Cli;
using Switchover.Cli.Doctor;
using Switchover.Processes;
using static Switchover.Tests.DoctorFixtures;

namespace Switchover.Tests;

/// <summary>doctor's checks of the kernel, the privileges and the tools, and how it reads them from the host.</summary>
public sealed class DoctorTestsHost : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("switchover-doctor-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static KernelFacts ModularKernel(params string[] without) => new()
    {
        Release = "6.1.0-28-amd64",
        ProcModules = string.Concat(KernelCheck.Features.Where(f => !without.Contains(f.Module)).Select(f => $"{f.Module} 16384 0 - Live 0x0\n")),
    };

    [Fact]
    public void A_missing_tproxy_module_is_a_problem_for_tproxy_and_information_for_redirect()
    {
        var kernel = ModularKernel("nft_tproxy") with { Modinfo = new Dictionary<string, string?> { ["nft_tproxy"] = null } };

        var tproxy = Analyze(Healthy with { Kernel = kernel });
        var redirect = Analyze(Healthy with { Kernel = kernel }, steering: Steering.Redirect);

        var missing = tproxy.Single("kernel-feature", "nft_tproxy");
        Assert.Equal(Severity.Problem, missing.Severity);
        Assert.Contains("modinfo finds no nft_tproxy module for kernel 6.1.0-28-amd64", missing.Message, StringComparison.Ordinal);
        Assert.Contains("linux-image-6.1.0-28-amd64", missing.Advice, StringComparison.Ordinal);
        Assert.Equal(Severity.Info, redirect.Single("kernel-feature", "nft_tproxy").Severity);
        Assert.Equal(ExitCodes.Failure, tproxy.ExitCode);
    }

    [Fact]
    public void A_module_that_is_installed_but_not_loaded_is_fine_it_loads_on_first_use()
    {
        var kernel = ModularKernel("nft_tproxy", "nf_tproxy_ipv6") with
        {
            Modinfo = new Dictionary<string, string?>
            {
                ["nft_tproxy"] = "/lib/modules/6.1.0-28-amd64/kernel/net/netfilter/nft_tproxy.ko",
                ["nf_tproxy_ipv6"] = "(builtin)",
            },
        };

        var report = Analyze(Healthy with { Kernel = kernel });

        report.AssertNone("kernel-feature");
        Assert.Contains("nft_tproxy (loads on first use)", report.Single("kernel").Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_kernel_without_modules_is_judged_by_its_configuration()
    {
        var config = string.Concat(KernelCheck.Features.Select(f => $"CONFIG_{f.Config}=y\n")).Replace("CONFIG_NF_TPROXY_IPV6=y", "# CONFIG_NF_TPROXY_IPV6 is not set", StringComparison.Ordinal);
        var kernel = new KernelFacts { Release = "6.18.44", ProcModules = null, Config = config, ConfigSource = "/proc/config.gz" };

        var report = Analyze(Healthy with { Kernel = kernel });
        var unknown = Analyze(Healthy with { Kernel = kernel with { Config = null, ConfigSource = null } });

        var missing = report.Single("kernel-feature", "nf_tproxy_ipv6");
        Assert.Equal(Severity.Problem, missing.Severity);
        Assert.Contains("CONFIG_NF_TPROXY_IPV6 is not set in /proc/config.gz", missing.Message, StringComparison.Ordinal);
        Assert.Contains("built in (this kernel has no loadable modules)", report.Single("kernel").Message, StringComparison.Ordinal);
        Assert.All(unknown.Findings.Where(f => f.Check == "kernel-feature"), f => Assert.Equal(Severity.Warning, f.Severity));
        Assert.Equal(ExitCodes.Warnings, unknown.ExitCode);
    }

    [Fact]
    public void Without_ipv6_the_ipv6_tproxy_module_is_not_needed_and_only_ipv4_is_checked()
    {
        var kernel = ModularKernel("nf_tproxy_ipv6") with { Ipv6 = false, Modinfo = new Dictionary<string, string?> { ["nf_tproxy_ipv6"] = null } };

        var report = Analyze(Shape("nft-drop-allows-8080") with { Kernel = kernel });

        Assert.Equal(Severity.Info, report.Single("ipv6").Severity);
        Assert.Equal(Severity.Info, report.Single("kernel-feature", "nf_tproxy_ipv6").Severity);
        Assert.Contains("for IPv4:", report.Single("port", "tcp/8080").Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_kernel_older_than_the_steering_needs_is_a_problem()
    {
        var report = Analyze(Healthy with { Kernel = Healthy.Kernel with { Release = "4.14.0-1-amd64" } });

        var version = report.Single("kernel", "version");
        Assert.Equal(Severity.Problem, version.Severity);
        Assert.Contains("older than 4.19", version.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 0x000001ffffffffffUL, "ok", "running as root, with CAP_NET_ADMIN")]
    [InlineData(1000, 0x0000000000001000UL, "ok", "running as uid 1000, with CAP_NET_ADMIN")]
    [InlineData(1000, 0UL, "problem", "running as uid 1000 without CAP_NET_ADMIN")]
    [InlineData(0, 0x00000000a80425fbUL, "problem", "running as root, but without CAP_NET_ADMIN")]
    public void Privileges_are_root_or_cap_net_admin_from_CapEff(int uid, ulong capEff, string severity, string message)
    {
        var finding = Analyze(Healthy with { EffectiveUid = uid, EffectiveCapabilities = capEff }).Single("privileges");

        Assert.Equal(severity == "ok" ? Severity.Ok : Severity.Problem, finding.Severity);
        Assert.StartsWith(message, finding.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_conntrack_program_is_a_warning_that_says_which_package_to_install()
    {
        var report = Analyze(Healthy with
        {
            Conntrack = new ToolFact("conntrack", "conntrack", null, "No such file or directory", NotFound: true),
        });

        var conntrack = report.Single("tool", "conntrack");
        Assert.Equal(Severity.Warning, conntrack.Severity);
        Assert.Equal("apt-get install conntrack", conntrack.Advice);
        Assert.Equal(Severity.Ok, report.Single("tool", "nft").Severity);
    }

    [Fact(Timeout = 10000)]
    public async Task The_probe_reads_procfs_and_runs_only_programs_that_read()
    {
        Write("proc/self/status", "Name:\tswitchover\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000001000\n");
        Write("proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
        Write("proc/modules", "nf_tables 352256 1 - Live 0x0\nnf_conntrack 188416 1 - Live 0x0\n");
        Directory.CreateDirectory(Path.Combine(_root, "sys/module/nft_ct"));
        Directory.CreateDirectory(Path.Combine(_root, "proc/sys/net/ipv6"));
        Write("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n");
        Write("proc/net/ip_tables_names", "filter\n");
        using (var gz = new GZipStream(File.Create(Path.Combine(_root, "proc/config.gz")), CompressionLevel.Fastest))
        {
            gz.Write(Encoding.ASCII.GetBytes("CONFIG_NF_TABLES=m\nCONFIG_NFT_TPROXY=m\n# CONFIG_NFT_REDIR is not set\nCONFIG_NF_CT_NETLINK=m\n"));
        }

        var ruleset = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Doctor", "Rulesets", "iptables-allows-8080.json"));
        var runner = new RecordingRunner
        {
            Answer = c => (c.FileName, string.Join(' ', c.Arguments)) switch
            {
                ("nft", "--version") => new CommandResult(0, "nftables v1.0.6 (Lester Gooch #5)\n", "", TimeSpan.Zero),
                ("nft", "-j list ruleset") => new CommandResult(0, ruleset, "", TimeSpan.Zero),
                ("conntrack", "--version") => new CommandResult(0, "", "conntrack v1.4.7 (conntrack-tools)\n", TimeSpan.Zero),
                ("modinfo", "-n nf_conntrack_netlink") => new CommandResult(1, "", "modinfo: ERROR: Module nf_conntrack_netlink not found.\n", TimeSpan.Zero),
                ("modinfo", var args) => new CommandResult(0, $"/lib/modules/6.1.0-28-amd64/{args[3..]}.ko\n", "", TimeSpan.Zero),
                ("iptables-nft-save" or "ip6tables-nft-save" or "iptables-legacy-save", _) => new CommandResult(0, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "", TimeSpan.Zero),
                _ => throw new InvalidOperationException($"doctor ran something unexpected: {c}"),
            },
        };

        var facts = await new HostProbe(runner, _root, _ => true).CollectAsync("nft", "conntrack", null, _root, CancellationToken.None);

        Assert.Equal(1000, facts.EffectiveUid);
        Assert.Equal(0x1000UL, facts.EffectiveCapabilities);
        Assert.Equal("conntrack v1.4.7 (conntrack-tools)", facts.Conntrack.Version);
        Assert.Equal((32768, 60999), facts.LocalPortRange);
        Assert.Equal(["filter"], facts.LegacyTables);
        Assert.Equal("/proc/config.gz", facts.Kernel.ConfigSource);
        Assert.Contains("nft_ct", facts.Kernel.SysModules);
        Assert.True(facts.Kernel.Ipv6);
        Assert.NotNull(facts.IptablesNft?.Text);
        Assert.NotNull(facts.Ip6tablesNft?.Text);
        Assert.NotNull(facts.IptablesLegacy?.Text);
        Assert.Null(facts.Ip6tablesLegacy);

        // modinfo only for modules neither loaded nor settled by the configuration (y, or absent from it).
        var asked = runner.Commands.Where(c => c.FileName == "modinfo").Select(c => c.Arguments[^1]).ToList();
        Assert.Equal(["nf_conntrack_netlink", "nft_tproxy"], asked.Order());
        var report = DoctorAnalysis.Analyze(facts, new DoctorRequest([8080], null, null));
        Assert.Equal(Severity.Problem, report.Single("kernel-feature", "nf_conntrack_netlink").Severity);
        Assert.Contains("not set in /proc/config.gz", report.Single("kernel-feature", "nft_fib_inet").Message, StringComparison.Ordinal);
        Assert.Equal(Severity.Ok, report.Single("privileges").Severity);
        Assert.All(runner.Commands, c => Assert.DoesNotContain(c.Arguments, a => a is "add" or "delete" or "flush" or "-f" or "-A" or "-I"));
    }

    [Theory(Timeout = 10000)]
    [InlineData("doctor", "--port", "0")]
    [InlineData("doctor", "--port", "http")]
    [InlineData("doctor", "--steering", "nat")]
    [InlineData("doctor", "--namespace", "Bad Name")]
    public async Task Doctor_usage_errors_exit_with_code_2(params string[] args)
    {
        var error = new StringWriter();
        var code = await SwitchoverCli.RunAsync(args, new System.CommandLine.InvocationConfiguration { Error = error, Output = TextWriter.Null });

        Assert.Equal(ExitCodes.Usage, code);
        Assert.StartsWith("switchover: ", error.ToString(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 10000)]
    public async Task Doctor_help_documents_its_exit_codes()
    {
        var output = new StringWriter();
        await SwitchoverCli.RunAsync(["doctor", "--help"], new System.CommandLine.InvocationConfiguration { Output = output });

        var help = output.ToString();
        Assert.Contains("Exit codes:", help, StringComparison.Ordinal);
        Assert.Contains("  3  warnings, no problem", help, StringComparison.Ordinal);
        Assert.Contains("--steering", help, StringComparison.Ordinal);
    }

    private void Write(string relative, string text)
    {
        var path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
    }
}
