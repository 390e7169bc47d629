using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Lab;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Integration;

/// <summary>What the tunnel puts on the wire, as an independent dissector (tshark) reads it.</summary>
[Collection(GreLabGroup.Name)]
public sealed class WireTests
{
    private const int SigInt = 2;

    [Theory(Timeout = 90_000)]
    [MemberData(nameof(UserspaceTunnelTests.OutersAndEncapsulations), MemberType = typeof(UserspaceTunnelTests))]
    public async Task A_capture_on_the_link_decodes_as_GRE_with_the_configured_key_and_the_inner_packets(AddressFamily outer, TunnelEncapsulation encapsulation)
    {
        const uint key = 0x00C0FFEE;
        await using var lab = await GreLab.CreateAsync(outer, key, CancellationToken.None, customize: o => o with { Encapsulation = encapsulation });
        var packets = await CaptureAsync(lab, async () =>
        {
            await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB4, lab.A);
            await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB6, lab.A);
        });

        var udp = packets.Where(p => p.UdpPort is not null).ToList();
        Assert.True(udp.Count >= 4, "expected two UDP round trips in the capture:\n" + string.Join('\n', packets));
        foreach (var packet in packets)
        {
            Assert.True(packet.Key == key, $"GRE key {packet.Key} instead of {key}: {packet}");
            Assert.True(packet.Source == lab.OuterA.ToString() || packet.Source == lab.OuterB.ToString(), packet.ToString());
            Assert.Null(packet.Checksum);
            Assert.Null(packet.Sequence);

            // GRE in UDP (RFC 8086): from port 4754 to port 4754, which a dissector decodes as GRE by itself.
            Assert.True(packet.OuterPorts == (encapsulation == TunnelEncapsulation.GreInUdp ? "4754/4754" : null), packet.ToString());
        }

        Assert.Contains(udp, p => p.Protocol == GreCodec.ProtocolIPv4 && p.Source == lab.OuterA.ToString());
        Assert.Contains(udp, p => p.Protocol == GreCodec.ProtocolIPv4 && p.Source == lab.OuterB.ToString());
        Assert.Contains(udp, p => p.Protocol == GreCodec.ProtocolIPv6 && p.Source == lab.OuterA.ToString());
        Assert.Contains(udp, p => p.Protocol == GreCodec.ProtocolIPv6 && p.Source == lab.OuterB.ToString());
    }

    [Fact(Timeout = 90_000)]
    public async Task Checksums_and_sequence_numbers_when_asked_for_are_the_ones_a_dissector_accepts()
    {
        await using var lab = await GreLab.CreateAsync(AddressFamily.InterNetwork, key: 7, CancellationToken.None,
            customize: o => o with { SendChecksum = true, SendSequenceNumbers = true });
        var packets = await CaptureAsync(lab, async () =>
        {
            for (var i = 0; i < 3; i++)
            {
                await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB4, lab.A);
            }
        });

        var fromA = packets.Where(p => p.Source == lab.OuterA.ToString() && p.UdpPort is not null).ToList();
        Assert.True(fromA.Count >= 3, string.Join('\n', packets));
        Assert.All(packets, p => Assert.True(p.Checksum == "1", $"checksum status {p.Checksum} (1 is good): {p}"));
        Assert.All(packets, p => Assert.Equal(7u, p.Key));
        var sequence = fromA.Select(p => p.Sequence!.Value).ToList();
        Assert.Equal(sequence.Order(), sequence);
        Assert.Equal(sequence.Count, sequence.Distinct().Count());
    }

    /// <summary>
    /// Captures GRE on A's link with tshark, decoding as it goes, while <paramref name="traffic"/> runs. tshark reports
    /// "Capturing on" a moment before it really captures, so UDP round trips are sent first until one shows up.
    /// </summary>
    private static async Task<List<Decoded>> CaptureAsync(GreLab lab, Func<Task> traffic)
    {
        var udp = lab.TunnelA!.Options.Encapsulation == TunnelEncapsulation.GreInUdp;
        var filter = udp ? "udp port 4754" : lab.OuterFamily == AddressFamily.InterNetwork ? "ip proto 47" : "ip6 proto 47";
        await using var capture = lab.A.StartProcess("tshark", ["-l", "-n", "-i", GreLab.Link, "-f", filter, "-a", "duration:60",
            "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
            "-e", "gre.key", "-e", "gre.proto", "-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport", "-e", "udp.dstport",
            "-e", "gre.checksum.status", "-e", "gre.sequence_number", "-e", "frame.number"]);
        await capture.WaitForOutputAsync("Capturing on", TimeSpan.FromSeconds(20), CancellationToken.None);
        var outer = (lab.OuterFamily == AddressFamily.InterNetworkV6, udp);
        for (var attempt = 0; !Parse(capture, outer).Any(p => p.UdpPort is not null); attempt++)
        {
            Assert.True(attempt < 50, "tshark captured no tunnelled UDP in 50 round trips:\n" + capture.Output);
            await Traffic.UdpRoundTripAsync(lab.B, GreLab.InnerB6, lab.A, size: 10);
            await Task.Delay(100);
        }

        var warmUp = Parse(capture, outer).Max(p => p.Frame);
        await traffic();
        await Task.Delay(500);
        capture.SendSignal(SigInt);
        await capture.Exited.WaitAsync(TimeSpan.FromSeconds(20));
        var packets = Parse(capture, outer).Where(p => p.Frame > warmUp).ToList();
        Assert.True(packets.Count > 0, "tshark decoded no GRE packet after the warm-up:\n" + capture.Output);
        return packets;
    }

    private static IEnumerable<Decoded> Parse(LabProcess capture, (bool V6, bool Udp) outer) =>
        capture.OutputLines.Where(line => line.Count(c => c == '|') == 8).Select(line => Decoded.Parse(line, outer.V6, outer.Udp));

    /// <param name="OuterPorts">GRE in UDP: the outer datagram's "source/destination" ports; null for GRE.</param>
    /// <param name="UdpPort">The inner UDP datagram's destination port, null when the inner packet is not UDP.</param>
    private sealed record Decoded(uint? Key, ushort Protocol, string Source, string? OuterPorts, int? UdpPort, string? Checksum, uint? Sequence, int Frame, string Line)
    {
        /// <summary>
        /// Every occurrence of a field, comma-separated, outermost first: the first ip.src or ipv6.src is the outer
        /// source; with a UDP outer header, the first UDP ports are its own.
        /// </summary>
        public static Decoded Parse(string line, bool outerV6, bool outerUdp)
        {
            var f = line.Split('|');
            Assert.True(f.Length >= 9, "unexpected tshark line: " + line);
            var sources = f[4].Split(',', StringSplitOptions.RemoveEmptyEntries);
            var destinations = f[5].Split(',', StringSplitOptions.RemoveEmptyEntries);
            var inner = outerUdp ? 1 : 0;
            return new Decoded(
                f[0].Length == 0 ? null : ParseNumber(f[0].Split(',')[0]),
                (ushort)ParseNumber(f[1].Split(',')[0]),
                (outerV6 ? f[3] : f[2]).Split(',')[0],
                outerUdp && sources.Length > 0 && destinations.Length > 0 ? sources[0] + "/" + destinations[0] : null,
                destinations.Length > inner ? int.Parse(destinations[inner], CultureInfo.InvariantCulture) : null,
                f[6].Length == 0 ? null : f[6],
                f[7].Length == 0 ? null : ParseNumber(f[7]),
                int.Parse(f[8], CultureInfo.InvariantCulture),
                line);
        }

        public override string ToString() => Line;

        private static uint ParseNumber(string text) => text.StartsWith("0x", StringComparison.Ordinal)
            ? uint.Parse(text.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : uint.Parse(text, CultureInfo.InvariantCulture);
    }
}
