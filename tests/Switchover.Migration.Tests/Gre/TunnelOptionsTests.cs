using System.Net;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Gre;

public sealed class TunnelOptionsTests
{
    private static readonly TunnelOptions V4 = new() { Name = "gre0", Local = IPAddress.Parse("192.0.2.1"), Remote = IPAddress.Parse("203.0.113.1") };
    private static readonly TunnelOptions V6 = new() { Name = "gre0", Local = IPAddress.Parse("2001:db8::1"), Remote = IPAddress.Parse("2001:db8::2") };

    [Fact]
    public void The_default_MTU_leaves_room_for_the_outer_header_and_the_GRE_header_with_its_fields()
    {
        Assert.Equal(1476, V4.EffectiveMtu);
        Assert.Equal(1472, (V4 with { Key = 1 }).EffectiveMtu);
        Assert.Equal(1464, (V4 with { Key = 1, SendChecksum = true, SendSequenceNumbers = true }).EffectiveMtu);
        Assert.Equal(1456, V6.EffectiveMtu);
        Assert.Equal(1452, (V6 with { Key = 1 }).EffectiveMtu);
        Assert.Equal(1400, (V4 with { Mtu = 1400 }).EffectiveMtu);

        // GRE in UDP: 8 bytes of UDP header more.
        Assert.Equal(1464, (V4 with { Key = 1, Encapsulation = TunnelEncapsulation.GreInUdp }).EffectiveMtu);
        Assert.Equal(1444, (V6 with { Key = 1, Encapsulation = TunnelEncapsulation.GreInUdp }).EffectiveMtu);
    }

    [Fact]
    public void Defaults_are_ttl_64_no_key_no_mark_no_checksum_no_sequence_numbers_this_namespace()
    {
        Assert.Equal(64, V4.Ttl);
        Assert.Null(V4.Key);
        Assert.Null(V4.FirewallMark);
        Assert.False(V4.SendChecksum);
        Assert.False(V4.SendSequenceNumbers);
        Assert.Null(V4.NetworkNamespace);
        Assert.Equal(TunnelEncapsulation.Gre, V4.Encapsulation);
        Assert.Empty(V4.Validate());
        Assert.Empty(V6.Validate());
    }

    [Fact]
    public void Every_problem_is_reported_at_once_each_saying_what_to_do()
    {
        var options = new TunnelOptions
        {
            Name = "a-name-that-is-far-too-long",
            Local = IPAddress.Parse("192.0.2.1"),
            Remote = IPAddress.Parse("192.0.2.1"),
            Mtu = 40,
            Ttl = 0,
            NetworkNamespace = "../etc",
            Encapsulation = (TunnelEncapsulation)7,
        };
        var errors = options.Validate();
        Assert.Equal(6, errors.Count);
        Assert.Contains(errors, e => e.Contains("Encapsulation 7 is unknown", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("not a valid interface name", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("a tunnel to itself", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Mtu 40 is out of range", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Ttl 0", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("NetworkNamespace '../etc'", StringComparison.Ordinal));
        var thrown = Assert.Throws<ArgumentException>(options.ThrowIfInvalid);
        Assert.All(errors, e => Assert.Contains(e, thrown.Message, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("192.0.2.1", "2001:db8::2", "different families")]
    [InlineData("0.0.0.0", "192.0.2.2", "must be a unicast address")]
    [InlineData("192.0.2.1", "224.0.0.5", "must be a unicast address")]
    [InlineData("::ffff:192.0.2.1", "::ffff:192.0.2.2", "IPv4-mapped")]
    [InlineData("2001:db8::1", "ff02::1", "must be a unicast address")]
    public void Outer_addresses_must_be_two_unicast_addresses_of_one_family(string local, string remote, string expected)
    {
        var errors = (V4 with { Local = IPAddress.Parse(local), Remote = IPAddress.Parse(remote) }).Validate();
        Assert.Contains(errors, e => e.Contains(expected, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("gre0", true)]
    [InlineData("so-mig.1_x", true)]
    [InlineData("exactly15chars_", true)]
    [InlineData("sixteen-chars-xx", false)]
    [InlineData("", false)]
    [InlineData("..", false)]
    [InlineData("gre 0", false)]
    [InlineData("gre/0", false)]
    [InlineData("gre:0", false)]
    public void Interface_names_follow_the_kernel_limits_and_stay_safe_in_paths(string name, bool valid)
    {
        Assert.Equal(valid, (V4 with { Name = name }).Validate().Count == 0);
    }
}
