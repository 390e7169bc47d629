using System.Net;
using System.Text.Json.Serialization;
using Switchover.Migration.Model;
using Switchover.Netfilter;

namespace Switchover.Migration.Plan;

/// <summary>
/// What a migration changed on this host, in order, with how to undo each change; its moved tuples; and, when this host
/// drives the other side over SSH, how it reaches it and what it answered.
/// </summary>
public sealed record MigrationJournal(
    int Version,
    string Name,
    MigrationSide Side,
    string TunnelDevice,
    string LocalOuter,
    string RemoteOuter,
    uint? Key,
    int Mtu,
    uint Mark,
    int RouteTable,
    IReadOnlyList<string> Tuples,
    IReadOnlyList<HostChange> Applied,
    string? LinkNetwork = null,
    Remote.PeerConnection? Peer = null,
    Gre.TunnelEncapsulation? Encapsulation = null)
{
    public const int CurrentVersion = 1;
    public const string FileName = "migration.json";

    public static MigrationJournal From(MigrationSpec spec, IReadOnlyList<HostChange> applied) => new(
        CurrentVersion, spec.Name.Value, spec.Side, spec.TunnelDevice, spec.LocalOuter.ToString(), spec.RemoteOuter.ToString(),
        spec.Key, spec.Mtu, spec.Mark, spec.RouteTable, spec.Tuples.Select(t => t.ToString()).ToList(), applied, spec.EffectiveLinkNetwork.ToString(),
        Encapsulation: spec.Encapsulation == Gre.TunnelEncapsulation.Gre ? null : spec.Encapsulation);

    public MigrationSpec ToSpec() => new(
        NamespaceName.Parse(Name), Side, TunnelDevice, IPAddress.Parse(LocalOuter), IPAddress.Parse(RemoteOuter), Key, Mtu, Mark, RouteTable,
        Tuples.Select(SteeredTuple.Parse).ToList(), LinkNetwork is null ? MigrationSpec.LegacyLinkNetwork : IPAddress.Parse(LinkNetwork))
    {
        // Journals written before GRE in UDP have none: they are plain GRE.
        Encapsulation = Encapsulation ?? Gre.TunnelEncapsulation.Gre,
    };
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UseStringEnumConverter = true)]
[JsonSerializable(typeof(MigrationJournal))]
internal sealed partial class MigrationJsonContext : JsonSerializerContext;
