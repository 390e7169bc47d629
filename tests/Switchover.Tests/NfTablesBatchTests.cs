using System.Buffers.Binary;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>
/// The nf_tables batch of a handoff table, byte for byte. The expected messages are what nft 1.0.6 sends for the
/// rendered text of the same table (<c>nft --debug=mnl -f</c> in a throwaway namespace), nfgenmsg and attributes;
/// the nlmsghdr (sequence numbers, flags) is ours and checked on its own.
/// </summary>
public sealed class NfTablesBatchTests
{
    private const uint First = 0x01020304;
    private static readonly NamespaceName Echo = NamespaceName.Parse("echo");

    [Fact]
    public void A_delete_is_one_batch_that_declares_the_table_then_deletes_it_each_message_asking_for_an_ack()
    {
        var batch = new NfTablesBatch();
        batch.EncodeDelete(Echo, First);

        // BATCH_BEGIN (0x10, REQUEST, res_id NFNL_SUBSYS_NFTABLES in network order), NEWTABLE (0x0a00,
        // REQUEST|ACK|CREATE, inet, name, flags 0), DELTABLE (0x0a02, REQUEST|ACK, inet, name), BATCH_END (0x11).
        Assert.Equal(
            "14000000" + "1000" + "0100" + "04030201" + "00000000" + "0000000a" +
            "30000000" + "000a" + "0504" + "05030201" + "00000000" + "01000000" +
            "1400" + "0100" + "7377697463686f7665725f6563686f00" + "0800" + "0200" + "00000000" +
            "28000000" + "020a" + "0500" + "06030201" + "00000000" + "01000000" +
            "1400" + "0100" + "7377697463686f7665725f6563686f00" +
            "14000000" + "1100" + "0100" + "07030201" + "00000000" + "0000000a",
            Convert.ToHexStringLower(batch.Bytes));
    }

    [Fact]
    public void Every_message_of_a_table_is_what_nft_sends_for_its_text()
    {
        var batch = new NfTablesBatch();
        batch.EncodeApply(ThreeGenerations(), First);
        var messages = Messages(batch.Bytes);

        // begin, table, flush (DELRULE of the whole table), chain, flags rule, set, elements, guard rule, two tproxy rules, end
        Assert.Equal([0x10, 0x0a00, 0x0a08, 0x0a03, 0x0a06, 0x0a09, 0x0a0c, 0x0a06, 0x0a06, 0x0a06, 0x11], messages.Select(m => (int)m.Type));
        Assert.Equal(Enumerable.Range(0, messages.Count).Select(i => First + (uint)i), messages.Select(m => m.Sequence));
        Assert.All(messages.Skip(1).SkipLast(1), m => Assert.Equal(0x5, m.Flags & 0x5)); // NLM_F_REQUEST|NLM_F_ACK on each
        Assert.Equal(0x0c05, messages[4].Flags); // a rule is appended: REQUEST|ACK|CREATE|APPEND
        Assert.Equal("01000000140001007377697463686f7665725f6563686f00", messages[2].Body); // flush: DELRULE, table only

        Assert.Equal(NftChain, messages[3].Body);
        Assert.Equal(NftFlagsRule, messages[4].Body);
        Assert.Equal(NftSet, messages[5].Body);
        Assert.Equal(NftSetElements, messages[6].Body);
        Assert.Equal(NftGuardRule, messages[7].Body);
        Assert.Equal(NftTproxyRule, messages[8].Body);
    }

    [Fact]
    public void A_comment_is_stored_as_nft_stores_it_so_that_nft_list_shows_it()
    {
        var batch = new NfTablesBatch();
        batch.EncodeApply(ThreeGenerations(), First);

        // NFTA_RULE_USERDATA (7): NFTNL_UDATA_RULE_COMMENT (0), length with the NUL, the text.
        Assert.EndsWith("1500" + "0700" + "000f" + Convert.ToHexStringLower("gen=2 pid=1002"u8) + "00" + "000000", Messages(batch.Bytes)[8].Body, StringComparison.Ordinal);
    }

    [Fact]
    public void A_refused_rule_is_named_by_its_text()
    {
        var table = ThreeGenerations();
        var batch = new NfTablesBatch();
        batch.EncodeApply(table, First);

        Assert.Equal("add rule inet switchover_echo prerouting tcp dport 8443 fib daddr type local tproxy to :40003 ct mark set ct mark & 0xff00ffff | 0x00030000 accept comment \"gen=2 pid=1002\"",
            batch.Statements[8].Describe("switchover_echo", table));
        Assert.Equal("add chain inet switchover_echo prerouting", batch.Statements[2].Describe("switchover_echo", table));
    }

    [Fact]
    public void A_port_out_of_range_encodes_nothing()
    {
        var batch = new NfTablesBatch();
        var table = new HandoffTable(Echo, Steering.Tproxy, [new PortSteer(new PortMapping(70000, 40001), 1, 1)], [40001], NatChains: false);
        Assert.Throws<ArgumentOutOfRangeException>(() => batch.EncodeApply(table, First));
    }

    private static HandoffTable ThreeGenerations() => HandoffTable.FromState(Echo, NamespaceState.Empty(Echo)
        .With(HandoffTableTests.Generation(1, GenerationState.Draining, (8080, 40001)))
        .With(HandoffTableTests.Generation(2, GenerationState.Active, (8080, 40002), (8443, 40003)))
        .With(HandoffTableTests.Generation(3, GenerationState.Starting, (8080, 40004))));

    private static List<(ushort Type, ushort Flags, uint Sequence, string Body)> Messages(ReadOnlySpan<byte> batch)
    {
        var messages = new List<(ushort, ushort, uint, string)>();
        while (batch.Length > 0)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(batch);
            messages.Add((BinaryPrimitives.ReadUInt16LittleEndian(batch[4..]), BinaryPrimitives.ReadUInt16LittleEndian(batch[6..]),
                BinaryPrimitives.ReadUInt32LittleEndian(batch[8..]), Convert.ToHexStringLower(batch[16..length])));
            batch = batch[length..];
        }

        return messages;
    }

    // Chain: nft --debug=mnl, message type 2563, 96 bytes
    private const string NftChain =
        "01000000140001007377697463686f7665725f6563686f000f000300707265726f7574696e6700000b00070066696c74" +
        "6572000008000500000000011400048008000100000000000800020000000014";

    // FlagsRule: nft --debug=mnl, message type 2566, 360 bytes
    private const string NftFlagsRule =
        "01000000140001007377697463686f7665725f6563686f000f000200707265726f7574696e6700003001048024000180" +
        "090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280" +
        "080001000000000108000200000000000c0003800500010006000000340001800c0001007061796c6f61640024000280" +
        "08000100000000010800020000000002080003000000000d08000400000000014c0001800c0001006269747769736500" +
        "3c00028008000100000000010800020000000001080006000000000008000300000000010c0004800500010017000000" +
        "0c00058005000100000000002c00018008000100636d700020000280080001000000000108000200000000010c000380" +
        "0500010002000000300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c000280" +
        "08000100fffffffb";

    // Set: nft --debug=mnl, message type 2569, 128 bytes
    private const string NftSet =
        "01000000140001007377697463686f7665725f6563686f000c0002005f5f736574256400080003000000000308000400" +
        "0000000d080005000000000208000a00000000010c000980080001000000000420000d00000402000000031400040700" +
        "0000010c000408000000010402000000";

    // SetElements: nft --debug=mnl, message type 2572, 128 bytes
    private const string NftSetElements =
        "01000000140001007377697463686f7665725f6563686f000c0002005f5f736574256400080004000000000144000380" +
        "100001800c000180060001009c410000100002800c000180060001009c420000100003800c000180060001009c430000" +
        "100004800c000180060001009c440000";

    // GuardRule: nft --debug=mnl, message type 2566, 368 bytes
    private const string NftGuardRule =
        "01000000140001007377697463686f7665725f6563686f000f000200707265726f7574696e6700003801048024000180" +
        "090001006d6574610000000014000280080002000000000408000100000000012c00018008000100636d700020000280" +
        "080001000000000108000200000000010c000380080001000100000024000180090001006d6574610000000014000280" +
        "080002000000001008000100000000012c00018008000100636d70002000028008000100000000010800020000000000" +
        "0c0003800500010006000000340001800c0001007061796c6f6164002400028008000100000000010800020000000002" +
        "08000300000000020800040000000002300001800b0001006c6f6f6b757000002000028008000200000000010c000100" +
        "5f5f7365742564000800040000000001300001800e000100696d6d6564696174650000001c0002800800010000000000" +
        "100002800c0002800800010000000000";

    // TproxyRule: nft --debug=mnl, message type 2566, 612 bytes
    private const string NftTproxyRule =
        "01000000140001007377697463686f7665725f6563686f000f000200707265726f7574696e6700001402048024000180" +
        "090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280" +
        "080001000000000108000200000000000c0003800500010006000000340001800c0001007061796c6f61640024000280" +
        "08000100000000010800020000000002080003000000000208000400000000022c00018008000100636d700020000280" +
        "080001000000000108000200000000000c000380060001001f9000002800018008000100666962001c00028008000300" +
        "00000002080002000000000308000100000000012c00018008000100636d700020000280080001000000000108000200" +
        "000000000c00038008000100020000002c0001800e000100696d6d656469617465000000180002800800010000000001" +
        "0c000280060001009c420000240001800b0001007470726f787900001400028008000100000000000800030000000001" +
        "20000180070001006374000014000280080002000000000308000100000000014c0001800c0001006269747769736500" +
        "3c00028008000100000000010800020000000001080006000000000008000300000000040c00048008000100ffff00ff" +
        "0c0005800800010000000300200001800700010063740000140002800800020000000003080004000000000130000180" +
        "0e000100696d6d6564696174650000001c0002800800010000000000100002800c000280080001000000000115000700" +
        "000f67656e3d32207069643d3130303200000000";
}
