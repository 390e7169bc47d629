using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Netfilter;

namespace Switchover.Migration.Model;

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<MigrationSide>))]
public enum MigrationSide
{
    /// <summary>The host that holds the public IP and steers moved tuples into the tunnel.</summary>
    Old,

    /// <summary>The host that runs the moved services on the old IP, behind the tunnel.</summary>
    New,
}

/// <summary>
/// One side of a migration: the tunnel between the hosts and the moved tuples. Both hosts are given the same
/// tunnel key and tuples; each renders only what it needs.
/// </summary>
public sealed record MigrationSpec(
    NamespaceName Name,
    MigrationSide Side,
    string TunnelDevice,
    IPAddress LocalOuter,
    IPAddress RemoteOuter,
    uint? Key,
    int Mtu,
    uint Mark,
    int RouteTable,
    IReadOnlyList<SteeredTuple> Tuples)
{
    public const int DefaultMtu = 1472;
    public const uint DefaultMark = 0x2f;
    public const int DefaultRouteTable = 47;

    /// <summary>The rule priorities this migration uses; the local table's rule is moved below them.</summary>
    public const int OuterRulePriority = 50;
    public const int SourceRulePriority = 60;
    public const int MarkRulePriority = 100;
    public const int LocalRulePriority = 200;

    /// <summary>The tunnel's own link addresses: loose rp_filter drops packets on an interface without an address.</summary>
    public string LinkAddress => Side == MigrationSide.Old ? "169.254.47.1/30" : "169.254.47.2/30";

    /// <summary>The moved IPs (the new host holds them on lo).</summary>
    public IReadOnlyList<IPAddress> MovedAddresses => Tuples.Select(t => t.Address).Distinct().ToList();

    /// <summary>Every problem with the spec that can be seen without looking at the host; empty when valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (TunnelDevice.Length is < 1 or > 15 || !TunnelDevice.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            errors.Add($"Tunnel device '{TunnelDevice}' must be 1-15 characters of letters, digits, '-', '_' and '.'.");
        }

        if (LocalOuter.Equals(RemoteOuter))
        {
            errors.Add($"The tunnel goes from {LocalOuter} to itself. --remote must be the other host's address.");
        }

        if (LocalOuter.AddressFamily != RemoteOuter.AddressFamily)
        {
            errors.Add($"The tunnel's outer addresses {LocalOuter} and {RemoteOuter} are of different families; use two IPv4 or two IPv6 addresses.");
        }

        if (Key is null)
        {
            errors.Add("The GRE key is missing. Pass --key K with the same value on both hosts: the key (RFC 2890) tells tunnels apart and rejects stray GRE.");
        }

        var minimum = Tuples.Any(t => t.IsIPv6) ? 1280 : 576;
        if (Mtu < minimum || Mtu > 9000)
        {
            errors.Add($"Tunnel MTU {Mtu} is out of range {minimum}-9000 (IPv4 outer with a key: 1472 on a 1500-byte link).");
        }

        if (Mark == 0)
        {
            errors.Add("The fwmark must not be 0.");
        }

        if (RouteTable is < 1 or > 252)
        {
            errors.Add($"Routing table {RouteTable} must be 1-252 (253-255 are the kernel's default, main and local).");
        }

        foreach (var duplicate in Tuples.GroupBy(t => t).Where(g => g.Count() > 1))
        {
            errors.Add($"Overlapping tuples: {duplicate.Key} is given {duplicate.Count()} times.");
        }

        foreach (var tuple in Tuples.Where(t => IPAddress.IsLoopback(t.Address) || t.Address.Equals(IPAddress.Any) || t.Address.Equals(IPAddress.IPv6Any)))
        {
            errors.Add($"Tuple {tuple}: a moved address must be a real address of the old host, not loopback or any.");
        }

        return errors;
    }

    /// <summary>The spec without its tuples: two setups of one migration must agree on it.</summary>
    public string Settings => string.Create(CultureInfo.InvariantCulture,
        $"{Side} {TunnelDevice} {LocalOuter}->{RemoteOuter} key={Key} mtu={Mtu} mark=0x{Mark:x} table={RouteTable}");

    public bool HasIPv6Outer => LocalOuter.AddressFamily == AddressFamily.InterNetworkV6;
}
