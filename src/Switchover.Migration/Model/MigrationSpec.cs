using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Migration.Gre;
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
    IReadOnlyList<SteeredTuple> Tuples,
    IPAddress? LinkNetwork = null)
{
    public const int DefaultMtu = 1472;
    /// <summary>The first mark and route table a host gives a migration; the next free pair is taken when these are in use.</summary>
    public const uint DefaultMark = 0x2f;
    public const int DefaultRouteTable = 47;

    /// <summary>As <see cref="Mark"/> or <see cref="RouteTable"/>: the host picks a free one (the CLI's default).</summary>
    public const int PickFree = 0;

    /// <summary>The rule priorities this migration uses; the local table's rule is moved below them.</summary>
    public const int OuterRulePriority = 50;
    public const int SourceRulePriority = 60;
    public const int MarkRulePriority = 100;
    public const int LocalRulePriority = 200;

    /// <summary>What journals written before link networks were per migration used.</summary>
    public static readonly IPAddress LegacyLinkNetwork = IPAddress.Parse("169.254.47.0");

    /// <summary>
    /// The /30 that holds the tunnel's two link addresses (.1 old, .2 new): given, or derived from the GRE key, so both
    /// hosts compute the same one and migrations with different keys get different ones.
    /// </summary>
    public IPAddress EffectiveLinkNetwork => LinkNetwork ?? LinkNetworkForKey(Key ?? 0);

    /// <summary>The tunnel's own link address: loose rp_filter drops packets on an interface without an address.</summary>
    public string LinkAddress => $"{LinkHost(Side == MigrationSide.Old ? 1 : 2)}/30";

    /// <summary>169.254.X.Y/30 from a key: X in 1-254 (169.254.0.0/24 and .255.0/24 are reserved, RFC 3927), Y a multiple of 4.</summary>
    public static IPAddress LinkNetworkForKey(uint key) =>
        new([169, 254, (byte)(1 + (key % 254)), (byte)(4 * (key / 254 % 64))]);

    private IPAddress LinkHost(int host)
    {
        var bytes = EffectiveLinkNetwork.GetAddressBytes();
        bytes[3] = (byte)(bytes[3] + host);
        return new IPAddress(bytes);
    }

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

        if (LinkNetwork is { } network && (network.AddressFamily != AddressFamily.InterNetwork || (network.GetAddressBytes()[3] & 3) != 0))
        {
            errors.Add($"Link network {network} must be the first address of an IPv4 /30 (its last number a multiple of 4), e.g. 169.254.10.0.");
        }

        if (RouteTable is not PickFree and (< 1 or > 252))
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

        if (!Enum.IsDefined(Encapsulation))
        {
            errors.Add($"Encapsulation {(int)Encapsulation} is unknown: use --encapsulation gre or --encapsulation udp, the same on both hosts.");
        }

        return errors;
    }

    /// <summary>
    /// The other host's SSH endpoints, when this host drives it (setup --peer): each address ssh may connect to (a
    /// name can resolve to several). On the new host, when one is a moved address (the old host's only address,
    /// typically), that address is local here too: a rule lets the SSH connections to it still leave by the uplink,
    /// as the outer GRE packets do. Not part of <see cref="Settings"/>.
    /// </summary>
    public IReadOnlyList<IPEndPoint> Control { get; init; } = [];

    /// <summary>
    /// The SSH session this setup runs in, as sshd reports it (SSH_CONNECTION): the client's address and this host's
    /// sshd port. On the new host, when the client is at a moved address (the old host driving this one), the replies
    /// to it must still leave by the uplink, or the session dies as the address comes to lo. Not part of <see cref="Settings"/>.
    /// </summary>
    public IPEndPoint? ControlClient { get; init; }

    /// <summary>
    /// How the tunnel carries its GRE packets: IP protocol 47 (the default) or GRE in UDP, port 4754 (RFC 8086; FOU on a
    /// kernel link). Both hosts must use the same; a setup with --peer gives the peer this one.
    /// </summary>
    public TunnelEncapsulation Encapsulation { get; init; }

    /// <summary>The outer packets as `ip rule` selectors: `ipproto gre`, or `ipproto udp dport 4754` for GRE in UDP.</summary>
    public string[] OuterSelectors => Encapsulation == TunnelEncapsulation.GreInUdp
        ? ["ipproto", "udp", "dport", TunnelOptions.GreInUdpPort.ToString(CultureInfo.InvariantCulture)]
        : ["ipproto", "gre"];

    /// <summary>The client address and the server port in an SSH_CONNECTION value ("client port server port"), or null.</summary>
    public static IPEndPoint? ParseSshConnection(string? value)
    {
        var parts = value?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return parts is { Length: 4 } && IPAddress.TryParse(parts[0], out var client)
            && int.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536
            ? new IPEndPoint(client, port)
            : null;
    }

    /// <summary>The spec without its tuples: two setups of one migration must agree on it.</summary>
    public string Settings => string.Create(CultureInfo.InvariantCulture,
        $"{Side} {TunnelDevice} {LocalOuter}->{RemoteOuter} key={Key} mtu={Mtu} mark=0x{Mark:x} table={RouteTable} link={EffectiveLinkNetwork}/30") +
        (Encapsulation == TunnelEncapsulation.Gre ? string.Empty : " encapsulation=" + EncapsulationName(Encapsulation));

    /// <summary>The `switchover tunnel run` option for this encapsulation: empty for plain GRE.</summary>
    public string TunnelRunEncapsulation => Encapsulation == TunnelEncapsulation.Gre ? string.Empty : " --encapsulation " + EncapsulationName(Encapsulation);

    /// <summary>The CLI's name of an encapsulation: gre or udp.</summary>
    public static string EncapsulationName(TunnelEncapsulation encapsulation) => TunnelEncapsulationNames.Name(encapsulation);

    public bool HasIPv6Outer => LocalOuter.AddressFamily == AddressFamily.InterNetworkV6;
}
