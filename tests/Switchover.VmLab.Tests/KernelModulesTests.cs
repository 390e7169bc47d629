using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Tests;

public sealed class KernelModulesTests
{
    // Excerpts of Debian 6.1's files, in depmod's formats.
    private const string Dep = """
        kernel/lib/libcrc32c.ko:
        kernel/crypto/crc32c_generic.ko:
        kernel/arch/x86/crypto/crc32c-intel.ko:
        kernel/net/netfilter/nfnetlink.ko:
        kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
        kernel/net/ipv4/gre.ko:
        kernel/net/ipv4/ip_tunnel.ko:
        kernel/net/ipv4/ip_gre.ko: kernel/net/ipv4/ip_tunnel.ko kernel/net/ipv4/gre.ko
        kernel/net/netfilter/nft_tproxy.ko: kernel/net/ipv6/netfilter/nf_tproxy_ipv6.ko kernel/net/ipv4/netfilter/nf_tproxy_ipv4.ko kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
        kernel/net/ipv6/netfilter/nf_tproxy_ipv6.ko:
        kernel/net/ipv4/netfilter/nf_tproxy_ipv4.ko:
        """;

    private const string Softdep = """
        # Soft dependencies extracted from modules themselves.
        softdep libcrc32c pre: crc32c
        softdep ext4 pre: crypto-crc32c
        """;

    private const string Alias = """
        alias crc32c crc32c_intel
        alias crc32c crc32c_generic
        alias rtnl-link-gre ip_gre
        """;

    private const string Builtin = "kernel/net/ipv4/tcp_bbr.ko\n";

    private static readonly KernelModules Modules = KernelModules.Parse(Dep, Softdep, Alias, Builtin);

    [Fact]
    public void Every_module_comes_after_what_it_depends_on()
    {
        var order = Modules.LoadOrder(["ip_gre", "nft_tproxy"]).Select(KernelModules.NameOf).ToList();

        Assert.True(order.IndexOf("gre") < order.IndexOf("ip_gre"));
        Assert.True(order.IndexOf("ip_tunnel") < order.IndexOf("ip_gre"));
        Assert.True(order.IndexOf("nfnetlink") < order.IndexOf("nf_tables"));
        Assert.True(order.IndexOf("nf_tables") < order.IndexOf("nft_tproxy"));
        Assert.True(order.IndexOf("nf_tproxy_ipv4") < order.IndexOf("nft_tproxy"));
        Assert.Equal(order.Count, order.Distinct().Count());
    }

    [Fact]
    public void A_soft_dependency_on_an_alias_loads_every_module_behind_it_first()
    {
        var order = Modules.LoadOrder(["nf_tables"]).Select(KernelModules.NameOf).ToList();

        Assert.Equal(["crc32c_generic", "crc32c_intel", "libcrc32c", "nf_tables", "nfnetlink"], order.Order(StringComparer.Ordinal));
        Assert.True(order.IndexOf("crc32c_intel") < order.IndexOf("libcrc32c"));
        Assert.True(order.IndexOf("crc32c_generic") < order.IndexOf("libcrc32c"));
        Assert.True(order.IndexOf("libcrc32c") < order.IndexOf("nf_tables"));
    }

    [Fact]
    public void Built_in_modules_are_left_out_and_unknown_ones_are_all_named()
    {
        Assert.Empty(Modules.LoadOrder(["tcp_bbr"]));

        var error = Assert.Throws<ArgumentException>(() => Modules.LoadOrder(["veth", "ip_gre", "nft_nope"]));

        Assert.Contains("veth, nft_nope", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Dashes_and_underscores_name_the_same_module()
    {
        Assert.Equal("crc32c_intel", KernelModules.NameOf("kernel/arch/x86/crypto/crc32c-intel.ko"));
        Assert.Equal(["kernel/arch/x86/crypto/crc32c-intel.ko"], Modules.LoadOrder(["crc32c-intel"]));
        Assert.Equal("nf_tables", KernelModules.NameOf("kernel/net/netfilter/nf_tables.ko.xz"));
    }
}
