using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace Switchover.Migration.Gre;

/// <summary>
/// One GRE tunnel between two hosts, as both dataplanes (kernel and userspace) create it. The other end must use the
/// same key, and local and remote swapped.
/// </summary>
public sealed partial record TunnelOptions
{
    /// <summary>Outer header bytes before the GRE header: IPv4 without options, IPv6 without extension headers.</summary>
    private const int IPv4HeaderLength = 20;
    private const int IPv6HeaderLength = 40;
    private const int UdpHeaderLength = 8;

    /// <summary>The UDP port of GRE in UDP (RFC 8086 §3.2), source and destination at both ends.</summary>
    public const ushort GreInUdpPort = 4754;

    /// <summary>The interface name, e.g. "gre0": 1 to 15 characters of [A-Za-z0-9_.-].</summary>
    public required string Name { get; init; }

    /// <summary>This host's outer address: the source of the GRE packets sent, and the address they are received on.</summary>
    public required IPAddress Local { get; init; }

    /// <summary>The other host's outer address. GRE from any other source is dropped and counted as stray.</summary>
    public required IPAddress Remote { get; init; }

    /// <summary>
    /// The GRE key (RFC 2890), sent in every packet and required in every packet received. Null (the default): no
    /// key is sent, and packets that carry one are dropped. A key tells tunnels apart; it is not a secret.
    /// </summary>
    public uint? Key { get; init; }

    /// <summary>
    /// The tunnel interface's MTU: the largest inner packet. Null (the default): 1500 minus <see cref="Overhead"/>,
    /// e.g. 1472 for IPv4 outer with a key.
    /// </summary>
    public int? Mtu { get; init; }

    /// <summary>
    /// The firewall mark of the outer GRE packets (SO_MARK on the raw socket, fwmark on a kernel link), so that policy
    /// routing can send them via the main table in the single-IP case. Null (the default): unmarked.
    /// </summary>
    public uint? FirewallMark { get; init; }

    /// <summary>
    /// How the GRE packets travel: straight over IP as protocol 47 (<see cref="TunnelEncapsulation.Gre"/>, RFC 2784,
    /// the default), or inside UDP datagrams to port 4754 (<see cref="TunnelEncapsulation.GreInUdp"/>, RFC 8086).
    /// Both ends must agree. GRE in UDP costs 8 bytes more per packet and lets the userspace dataplane hand the kernel
    /// 64 KiB of GRE packets at a time (UDP segmentation and GRO) instead of one: see docs/gre-offload.md. The kernel's
    /// GRE speaks it as a FOU encapsulation (`encap fou`).
    /// </summary>
    public TunnelEncapsulation Encapsulation { get; init; }

    /// <summary>The TTL (IPv4) or hop limit (IPv6) of the outer packets. Default 64, as `ip link add … ttl 64`.</summary>
    public int Ttl { get; init; } = 64;

    /// <summary>Send a GRE checksum (RFC 2784) with every packet. Default false. A received checksum is always verified.</summary>
    public bool SendChecksum { get; init; }

    /// <summary>Send a sequence number (RFC 2890) with every packet. Default false. Received ones are parsed and ignored.</summary>
    public bool SendSequenceNumbers { get; init; }

    /// <summary>
    /// The `ip netns` namespace to create the tunnel in (its TUN device and raw socket, or its kernel link). Null (the
    /// default): the namespace of the calling process.
    /// </summary>
    public string? NetworkNamespace { get; init; }

    /// <summary>
    /// internal for benchmarking: the userspace tunnel takes no offloads from its TUN device (one MTU-sized packet per
    /// read and write, as before TSO/GRO), to compare against. Default false.
    /// </summary>
    internal bool DisableOffload { get; init; }

    /// <summary>The outer address family.</summary>
    public AddressFamily OuterFamily => Local.AddressFamily;

    /// <summary>Bytes added to every inner packet: the outer IP header and the GRE header with its optional fields.</summary>
    public int Overhead =>
        (OuterFamily == AddressFamily.InterNetworkV6 ? IPv6HeaderLength : IPv4HeaderLength) +
        (Encapsulation == TunnelEncapsulation.GreInUdp ? UdpHeaderLength : 0) + GreHeaderLength;

    /// <summary>The MTU the interface gets: <see cref="Mtu"/>, or 1500 minus <see cref="Overhead"/>.</summary>
    public int EffectiveMtu => Mtu ?? 1500 - Overhead;

    internal int GreHeaderLength =>
        GreCodec.BaseLength + (Key.HasValue ? 4 : 0) + (SendChecksum ? 4 : 0) + (SendSequenceNumbers ? 4 : 0);

    /// <summary>Every problem with these options, each saying what to do; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrEmpty(Name) || !InterfaceNamePattern().IsMatch(Name) || Name is "." or "..")
        {
            errors.Add($"Name '{Name}' is not a valid interface name: use 1 to 15 characters of [A-Za-z0-9_.-], e.g. \"gre0\".");
        }

        if (Local is null || Remote is null)
        {
            errors.Add("Local and Remote outer addresses are required.");
        }
        else
        {
            foreach (var (what, address) in new[] { ("Local", Local), ("Remote", Remote) })
            {
                if (address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
                {
                    errors.Add($"{what} address {address} is neither IPv4 nor IPv6.");
                }
                else if (IPAddress.Any.Equals(address) || IPAddress.IPv6Any.Equals(address) || IsMulticast(address) ||
                         IPAddress.Broadcast.Equals(address))
                {
                    errors.Add($"{what} address {address} must be a unicast address of a host.");
                }
                else if (address.IsIPv4MappedToIPv6)
                {
                    errors.Add($"{what} address {address} is IPv4-mapped: write it as IPv4 ({address.MapToIPv4()}).");
                }
            }

            if (Local.AddressFamily != Remote.AddressFamily)
            {
                errors.Add($"Local {Local} and Remote {Remote} are of different families: both outer addresses must be IPv4, or both IPv6.");
            }
            else if (Local.Equals(Remote))
            {
                errors.Add($"Local and Remote are both {Local}: a tunnel to itself carries nothing. Give the other host's address as Remote.");
            }
        }

        var maxMtu = 65535 - (Local is null ? IPv4HeaderLength : Overhead);
        if (Mtu is { } mtu && (mtu < 68 || mtu > maxMtu))
        {
            errors.Add($"Mtu {mtu} is out of range: use 68 to {maxMtu.ToString(CultureInfo.InvariantCulture)} (1280 or more to carry IPv6), " +
                "usually the outer link's MTU minus " + (Local is null ? "the overhead" : Overhead.ToString(CultureInfo.InvariantCulture)) + ".");
        }

        if (!Enum.IsDefined(Encapsulation))
        {
            errors.Add($"Encapsulation {(int)Encapsulation} is unknown: use Gre or GreInUdp.");
        }

        if (Ttl is < 1 or > 255)
        {
            errors.Add($"Ttl {Ttl} is out of range: use 1 to 255 (64 is usual).");
        }

        if (NetworkNamespace is not null && (!NamespacePattern().IsMatch(NetworkNamespace) || NetworkNamespace is "." or ".."))
        {
            errors.Add($"NetworkNamespace '{NetworkNamespace}' is not a valid `ip netns` name: use [A-Za-z0-9_.-], at most 64 characters.");
        }

        return errors;
    }

    /// <summary>Throws one <see cref="ArgumentException"/> that lists every problem, when there is any.</summary>
    public void ThrowIfInvalid()
    {
        var errors = Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException($"Invalid tunnel options: {string.Join(" ", errors)}");
        }
    }

    private static bool IsMulticast(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetworkV6
            ? address.IsIPv6Multicast
            : (address.GetAddressBytes()[0] & 0xF0) == 0xE0;

    [GeneratedRegex("^[A-Za-z0-9_.-]{1,15}$", RegexOptions.CultureInvariant)]
    private static partial Regex InterfaceNamePattern();

    [GeneratedRegex("^[A-Za-z0-9_.-]{1,64}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamespacePattern();
}

/// <summary>
/// How a tunnel's GRE packets are carried between the hosts. In JSON (the tunnel agent's status, the migration
/// journal) by its command-line name, gre or udp (<see cref="TunnelEncapsulationNames"/>).
/// </summary>
[JsonConverter(typeof(TunnelEncapsulationJsonConverter))]
public enum TunnelEncapsulation
{
    /// <summary>IP protocol 47 (RFC 2784, with the key and sequence number of RFC 2890).</summary>
    Gre,

    /// <summary>The same GRE header and payload in a UDP datagram, port 4754 at both ends (RFC 8086).</summary>
    GreInUdp,
}

/// <summary>The one vocabulary operators see for an encapsulation, as on the command line: gre and udp.</summary>
public static class TunnelEncapsulationNames
{
    public const string Gre = "gre";
    public const string Udp = "udp";

    /// <summary>gre or udp; an undefined value by its number.</summary>
    public static string Name(TunnelEncapsulation encapsulation) => encapsulation switch
    {
        TunnelEncapsulation.Gre => Gre,
        TunnelEncapsulation.GreInUdp => Udp,
        _ => ((int)encapsulation).ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// gre or udp; also the enum's own names (GreInUdp, greInUdp: what agents and journals wrote before the names were
    /// one vocabulary), in any case. Null when it is none of them.
    /// </summary>
    public static TunnelEncapsulation? Parse(string? text) => text?.ToLowerInvariant() switch
    {
        Gre => TunnelEncapsulation.Gre,
        Udp or "greinudp" => TunnelEncapsulation.GreInUdp,
        _ => null,
    };
}

/// <summary>Writes an encapsulation as gre or udp; reads those, the older enum names, and numbers.</summary>
internal sealed class TunnelEncapsulationJsonConverter : JsonConverter<TunnelEncapsulation>
{
    public override TunnelEncapsulation Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.Number => (TunnelEncapsulation)reader.GetInt32(),
        JsonTokenType.String => TunnelEncapsulationNames.Parse(reader.GetString())
            ?? throw new JsonException($"Encapsulation '{reader.GetString()}' is not known: gre or udp."),
        _ => throw new JsonException($"An encapsulation is a string (gre or udp), not {reader.TokenType}."),
    };

    public override void Write(Utf8JsonWriter writer, TunnelEncapsulation value, JsonSerializerOptions options)
    {
        if (Enum.IsDefined(value))
        {
            writer.WriteStringValue(TunnelEncapsulationNames.Name(value));
        }
        else
        {
            writer.WriteNumberValue((int)value);
        }
    }
}
