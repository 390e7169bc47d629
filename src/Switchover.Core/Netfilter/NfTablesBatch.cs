using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Switchover.Interop;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>
/// A <see cref="HandoffTable"/> as one nf_tables netlink batch (linux/netfilter/nf_tables.h, nfnetlink.h):
/// NFNL_MSG_BATCH_BEGIN, the same statements <see cref="HandoffTable.Render"/> writes (declare the table, delete its
/// rules, (re)declare the chains, the rules with their anonymous sets), NFNL_MSG_BATCH_END. The expressions are the
/// bytecode nft 1.0.6 emits for the rendered text (<c>nft --debug=netlink,mnl -f</c>), so that the kernel holds the
/// same table either way. Pure layout: no socket here. One buffer, reused from batch to batch.
/// </summary>
internal sealed class NfTablesBatch
{
    public const ushort SubsysNfTables = 10;
    public const ushort BatchBegin = 0x10; // NFNL_MSG_BATCH_BEGIN (NLMSG_MIN_TYPE)
    public const ushort BatchEnd = 0x11;
    public const byte NfprotoInet = 1;

    public const ushort NewTable = 0;
    public const ushort DelTable = 2;
    public const ushort NewChain = 3;
    public const ushort NewRule = 6;
    public const ushort DelRule = 8;
    public const ushort NewSet = 9;
    public const ushort NewSetElem = 12;
    public const ushort NewGen = 15;
    public const ushort GetGen = 16;

    public const ushort NlmFCreate = 0x400;
    public const ushort NlmFAppend = 0x800;

    private const ushort NlaFNested = 0x8000;

    // nf_tables.h attribute numbers, as far as the handoff table needs them.
    private const ushort TableName = 1, TableFlags = 2;
    private const ushort ChainTable = 1, ChainName = 3, ChainHook = 4, ChainPolicy = 5, ChainType = 7;
    private const ushort HookNum = 1, HookPriority = 2;
    private const ushort RuleTable = 1, RuleChain = 2, RuleExpressions = 4, RuleUserdata = 7;
    private const ushort ListElem = 1, ExprName = 1, ExprData = 2;
    private const ushort DataValue = 1, DataVerdict = 2, VerdictCode = 1;
    private const ushort SetTable = 1, SetName = 2, SetFlags = 3, SetKeyType = 4, SetKeyLen = 5, SetDesc = 9, SetId = 10, SetUserdata = 13, SetDescSize = 1;
    private const ushort SetElemListTable = 1, SetElemListSet = 2, SetElemListElements = 3, SetElemListSetId = 4, SetElemKey = 1;

    private const uint RegVerdict = 0, Reg1 = 1;
    private const uint CmpEq = 0, CmpNeq = 1;
    private const uint MetaIif = 4, MetaNfproto = 15, MetaL4proto = 16;
    private const uint PayloadNetwork = 1, PayloadTransport = 2;
    private const uint CtStatus = 2, CtMark = 3;
    private const uint FibResultAddrtype = 3, FibFlagDaddr = 2;
    private const uint NatRangeProtoSpecified = 2;
    private const uint VerdictAccept = 1, VerdictDrop = 0, VerdictReturn = unchecked((uint)-5);
    private const uint HookPrerouting = 0, HookOutput = 3;
    private const uint SetAnonymous = 1, SetConstant = 2, TypeInetService = 13;
    private const uint IpsDstNat = 0x20;
    private const uint RtnLocal = 2;

    // What nft 1.0.6 stores in an anonymous set of "tcp dport { ... }" (NFTNL_UDATA_SET_KEYBYTEORDER big endian and
    // the typeof of the key: payload tcp dport): nft list reads it back to print the elements as it does for its own.
    private static readonly byte[] TcpDportSetUserdata =
    [
        0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x03, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c,
        0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00,
    ];

    private readonly List<Statement> _statements = [];
    private readonly int[] _nests = new int[8];
    private byte[] _buffer = new byte[16 * 1024];
    private int _length;
    private int _depth;
    private int _messageStart;
    private uint _sequence;
    private uint _firstSequence;
    private uint _setId;

    /// <summary>The batch's bytes (valid until the next Encode).</summary>
    public ReadOnlySpan<byte> Bytes => _buffer.AsSpan(0, _length);

    /// <summary>The sequence number of NFNL_MSG_BATCH_BEGIN; the messages in between follow it, one each.</summary>
    public uint FirstSequence => _firstSequence;

    /// <summary>The statements of the batch, in order: the first has sequence <see cref="FirstSequence"/> + 1.</summary>
    public IReadOnlyList<Statement> Statements => _statements;

    /// <summary>The whole table: declare, delete its rules, redefine. Throws before encoding anything for a port out of range.</summary>
    public void EncodeApply(HandoffTable table, uint firstSequence)
    {
        if (table.PortOutOfRange() is { } port)
        {
            throw new ArgumentOutOfRangeException(nameof(table), port, $"Port {port} is out of range 1-65535; no rule was sent.");
        }

        var name = table.Namespace.TableName;
        Begin(firstSequence);
        Table(NewTable, NlmFCreate, name);
        Message(DelRule, 0, Statement.Kind.Flush, null, 0);
        Str(RuleTable, name);
        EndMessage();

        // Every chain before the first rule, as nft orders a table block: the kernel numbers chains, sets and rules from
        // one counter per table, so the handles nft list shows come out the same as for the text.
        Chain(name, "prerouting", "filter", HookPrerouting, 20);
        if (table.NatChains)
        {
            Chain(name, "nat_prerouting", "nat", HookPrerouting, -100);
            Chain(name, "nat_output", "nat", HookOutput, -100);
        }

        var rule = 0;
        TcpFlagsNotSynReturn(name, rule++);
        if (table.GuardedPorts.Count > 0)
        {
            if (table.NatChains)
            {
                GuardRule(name, table.GuardedPorts, accept: true, rule++);
            }

            GuardRule(name, table.GuardedPorts, accept: false, rule++);
        }

        if (table.Steering == Steering.Tproxy)
        {
            foreach (var steer in table.Steers)
            {
                SteerRule(name, "prerouting", steer, tproxy: true, rule++);
            }
        }

        if (table.NatChains)
        {
            rule = 0;
            foreach (var steer in table.Steering == Steering.Redirect ? table.Steers : [])
            {
                SteerRule(name, "nat_prerouting", steer, tproxy: false, rule++);
            }

            rule = 0;
            foreach (var steer in table.Steering == Steering.Redirect ? table.Steers : [])
            {
                SteerRule(name, "nat_output", steer, tproxy: false, rule++);
            }
        }

        End();
    }

    /// <summary>Deletes the table if it exists: declared first, so the delete never fails for a missing table.</summary>
    public void EncodeDelete(NamespaceName name, uint firstSequence)
    {
        Begin(firstSequence);
        Table(NewTable, NlmFCreate, name.TableName);
        Table(DelTable, 0, name.TableName);
        End();
    }

    /// <summary>NFT_MSG_GETGEN: changes nothing; nfnetlink answers it only to a process with CAP_NET_ADMIN.</summary>
    public void EncodeGetGeneration(uint sequence)
    {
        _length = 0;
        _statements.Clear();
        _firstSequence = sequence;
        _sequence = sequence;
        StartMessage((ushort)((SubsysNfTables << 8) | GetGen), NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFAck, CtNetlink.AfUnspec, 0);
        EndMessage();
    }

    private void Begin(uint firstSequence)
    {
        _length = 0;
        _setId = 0;
        _statements.Clear();
        _firstSequence = firstSequence;
        _sequence = firstSequence;
        StartMessage(BatchBegin, NetlinkSocket.NlmFRequest, CtNetlink.AfUnspec, SubsysNfTables);
        EndMessage();
    }

    private void End()
    {
        StartMessage(BatchEnd, NetlinkSocket.NlmFRequest, CtNetlink.AfUnspec, SubsysNfTables);
        EndMessage();
    }

    private void Table(ushort type, ushort flags, string name)
    {
        Message(type, flags, type == DelTable ? Statement.Kind.DeleteTable : Statement.Kind.Table, null, 0);
        Str(TableName, name);
        if (type == NewTable)
        {
            Be32(TableFlags, 0);
        }

        EndMessage();
    }

    private void Chain(string table, string chain, string type, uint hook, int priority)
    {
        Message(NewChain, NlmFCreate, Statement.Kind.Chain, chain, 0);
        Str(ChainTable, table);
        Str(ChainName, chain);
        Str(ChainType, type);
        Be32(ChainPolicy, VerdictAccept);
        var nest = BeginNest(ChainHook);
        Be32(HookNum, hook);
        Be32(HookPriority, unchecked((uint)priority));
        EndNest(nest);
        EndMessage();
    }

    // tcp flags & (fin | syn | rst | ack) != syn return
    private void TcpFlagsNotSynReturn(string table, int index)
    {
        var expressions = BeginRule(table, "prerouting", index);
        L4protoTcp();
        Payload(PayloadTransport, 13, 1);
        Bitwise(1, [0x17], [0x00], withOperation: true);
        Cmp(CmpNeq, [0x02]);
        Verdict(VerdictReturn);
        EndRule(expressions, null);
    }

    // iif != "lo" tcp dport { ports } [ct status dnat] accept|drop, the set anonymous and constant as nft makes it.
    // One port is a plain comparison: nft turns a set of one element into that too.
    private void GuardRule(string table, IReadOnlyList<int> ports, bool accept, int index)
    {
        var setId = ports.Count > 1 ? AnonymousSet(table, ports) : 0;
        var expressions = BeginRule(table, "prerouting", index);
        Meta(MetaIif);
        Span<byte> lo = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(lo, 1); // "lo" is ifindex 1 in every network namespace; nft resolves it so
        Cmp(CmpNeq, lo);
        L4protoTcp();
        Payload(PayloadTransport, 2, 2);
        if (ports.Count > 1)
        {
            Lookup(setId);
        }
        else
        {
            Span<byte> port = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16BigEndian(port, (ushort)ports[0]);
            Cmp(CmpEq, port);
        }

        if (accept)
        {
            Ct(CtStatus);
            Span<byte> mask = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(mask, IpsDstNat);
            Bitwise(4, mask, [0, 0, 0, 0]);
            Cmp(CmpNeq, [0, 0, 0, 0]);
        }

        Verdict(accept ? VerdictAccept : VerdictDrop);
        EndRule(expressions, null);
    }

    private void SteerRule(string table, string chain, PortSteer steer, bool tproxy, int index)
    {
        var expressions = BeginRule(table, chain, index);
        var family = Match(steer.Port);
        Span<byte> port = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(port, (ushort)steer.Port.PrivatePort);
        Immediate(port);
        if (tproxy)
        {
            // tproxy [ip|ip6] to :port; ct mark set ct mark & ~mask | mark; accept
            var data = BeginExpression("tproxy");
            Be32(1, family); // NFTA_TPROXY_FAMILY
            Be32(3, Reg1); // NFTA_TPROXY_REG_PORT
            EndExpression(data);
            Ct(CtMark);
            Span<byte> mask = stackalloc byte[4];
            Span<byte> mark = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(mask, ~HandoffTable.CtMarkMask);
            BinaryPrimitives.WriteUInt32LittleEndian(mark, HandoffTable.CtMarkOf(steer.GenerationId));
            Bitwise(4, mask, mark, withOperation: true);
            data = BeginExpression("ct");
            Be32(2, CtMark); // NFTA_CT_KEY
            Be32(4, Reg1); // NFTA_CT_SREG
            EndExpression(data);
            Verdict(VerdictAccept);
        }
        else
        {
            // redirect to :port
            var data = BeginExpression("redir");
            Be32(1, Reg1); // NFTA_REDIR_REG_PROTO_MIN
            Be32(3, NatRangeProtoSpecified); // NFTA_REDIR_FLAGS
            EndExpression(data);
        }

        EndRule(expressions, steer);
    }

    /// <summary>What selects the endpoint's packets (as <see cref="HandoffTable"/>'s Match), and the family TPROXY then needs.</summary>
    private uint Match(PortMapping port)
    {
        Span<byte> dport = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(dport, (ushort)port.PublicPort);
        if (port.PublicAddress is null)
        {
            TcpDportLocal(dport);
            return 0;
        }

        var address = IPAddress.Parse(port.PublicAddress);
        if (address.Equals(IPAddress.Any))
        {
            Meta(MetaNfproto);
            Cmp(CmpEq, [CtNetlink.AfInet]);
            TcpDportLocal(dport);
            return CtNetlink.AfInet;
        }

        var v6 = address.AddressFamily == AddressFamily.InterNetworkV6;
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var written);
        Meta(MetaNfproto);
        Cmp(CmpEq, [v6 ? CtNetlink.AfInet6 : CtNetlink.AfInet]);
        Payload(PayloadNetwork, v6 ? 24u : 16u, (uint)written);
        Cmp(CmpEq, bytes[..written]);
        L4protoTcp();
        Payload(PayloadTransport, 2, 2);
        Cmp(CmpEq, dport);
        return v6 ? CtNetlink.AfInet6 : CtNetlink.AfInet;
    }

    private void TcpDportLocal(ReadOnlySpan<byte> dport)
    {
        L4protoTcp();
        Payload(PayloadTransport, 2, 2);
        Cmp(CmpEq, dport);
        var data = BeginExpression("fib");
        Be32(3, FibFlagDaddr); // NFTA_FIB_FLAGS
        Be32(2, FibResultAddrtype); // NFTA_FIB_RESULT
        Be32(1, Reg1); // NFTA_FIB_DREG
        EndExpression(data);
        Span<byte> local = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(local, RtnLocal);
        Cmp(CmpEq, local);
    }

    private uint AnonymousSet(string table, IReadOnlyList<int> ports)
    {
        var id = ++_setId;
        Message(NewSet, NlmFCreate, Statement.Kind.Set, "prerouting", 0);
        Str(SetTable, table);
        Str(SetName, "__set%d");
        Be32(SetFlags, SetAnonymous | SetConstant);
        Be32(SetKeyType, TypeInetService);
        Be32(SetKeyLen, 2);
        Be32(SetId, id);
        var desc = BeginNest(SetDesc);
        Be32(SetDescSize, (uint)ports.Count);
        EndNest(desc);
        Attribute(SetUserdata, TcpDportSetUserdata);
        EndMessage();

        Message(NewSetElem, NlmFCreate, Statement.Kind.SetElements, "prerouting", 0);
        Str(SetElemListTable, table);
        Str(SetElemListSet, "__set%d");
        Be32(SetElemListSetId, id);
        var list = BeginNest(SetElemListElements);
        Span<byte> value = stackalloc byte[2];
        for (var i = 0; i < ports.Count; i++)
        {
            // libnftnl numbers the elements of the list 1, 2, 3 (the kernel reads any type there): so do we.
            var port = ports[i];
            var element = BeginNest((ushort)(i + 1));
            var key = BeginNest(SetElemKey);
            BinaryPrimitives.WriteUInt16BigEndian(value, (ushort)port);
            Attribute(DataValue, value);
            EndNest(key);
            EndNest(element);
        }

        EndNest(list);
        EndMessage();
        return id;
    }

    private int BeginRule(string table, string chain, int index)
    {
        Message(NewRule, NlmFCreate | NlmFAppend, Statement.Kind.Rule, chain, index);
        Str(RuleTable, table);
        Str(RuleChain, chain);
        return BeginNest(RuleExpressions);
    }

    private void EndRule(int expressions, PortSteer? comment)
    {
        EndNest(expressions);
        if (comment is not null)
        {
            // NFTNL_UDATA_RULE_COMMENT (type 0), the text with its NUL, as nft stores "comment ...".
            Span<byte> text = stackalloc byte[64];
            var length = Encoding.ASCII.GetBytes($"gen={comment.GenerationId} pid={comment.Pid}", text[2..]);
            text[0] = 0;
            text[1] = (byte)(length + 1);
            text[2 + length] = 0;
            Attribute(RuleUserdata, text[..(length + 3)]);
        }

        EndMessage();
    }

    private void L4protoTcp()
    {
        Meta(MetaL4proto);
        Cmp(CmpEq, [CtNetlink.IpprotoTcp]);
    }

    private void Meta(uint key)
    {
        var data = BeginExpression("meta");
        Be32(2, key); // NFTA_META_KEY
        Be32(1, Reg1); // NFTA_META_DREG
        EndExpression(data);
    }

    private void Cmp(uint op, ReadOnlySpan<byte> value)
    {
        var data = BeginExpression("cmp");
        Be32(1, Reg1); // NFTA_CMP_SREG
        Be32(2, op); // NFTA_CMP_OP
        var nest = BeginNest(3); // NFTA_CMP_DATA
        Attribute(DataValue, value);
        EndNest(nest);
        EndExpression(data);
    }

    private void Payload(uint payloadBase, uint offset, uint length)
    {
        var data = BeginExpression("payload");
        Be32(1, Reg1); // NFTA_PAYLOAD_DREG
        Be32(2, payloadBase);
        Be32(3, offset);
        Be32(4, length);
        EndExpression(data);
    }

    /// <param name="withOperation">NFTA_BITWISE_OP (NFT_BITWISE_BOOL, the kernel's default): nft 1.0.6 sends it for the tcp flags and the mark, not for ct status (a flag test it builds differently).</param>
    private void Bitwise(uint length, ReadOnlySpan<byte> mask, ReadOnlySpan<byte> xor, bool withOperation = false)
    {
        var data = BeginExpression("bitwise");
        Be32(1, Reg1); // NFTA_BITWISE_SREG
        Be32(2, Reg1); // NFTA_BITWISE_DREG
        if (withOperation)
        {
            Be32(6, 0); // NFTA_BITWISE_OP
        }

        Be32(3, length);
        var nest = BeginNest(4); // NFTA_BITWISE_MASK
        Attribute(DataValue, mask);
        EndNest(nest);
        nest = BeginNest(5); // NFTA_BITWISE_XOR
        Attribute(DataValue, xor);
        EndNest(nest);
        EndExpression(data);
    }

    private void Lookup(uint setId)
    {
        var data = BeginExpression("lookup");
        Be32(2, Reg1); // NFTA_LOOKUP_SREG
        Str(1, "__set%d"); // NFTA_LOOKUP_SET
        Be32(4, setId); // NFTA_LOOKUP_SET_ID
        EndExpression(data);
    }

    private void Ct(uint key)
    {
        var data = BeginExpression("ct");
        Be32(2, key); // NFTA_CT_KEY
        Be32(1, Reg1); // NFTA_CT_DREG
        EndExpression(data);
    }

    private void Immediate(ReadOnlySpan<byte> value)
    {
        var data = BeginExpression("immediate");
        Be32(1, Reg1); // NFTA_IMMEDIATE_DREG
        var nest = BeginNest(2); // NFTA_IMMEDIATE_DATA
        Attribute(DataValue, value);
        EndNest(nest);
        EndExpression(data);
    }

    private void Verdict(uint code)
    {
        var data = BeginExpression("immediate");
        Be32(1, RegVerdict);
        var nest = BeginNest(2); // NFTA_IMMEDIATE_DATA
        var verdict = BeginNest(DataVerdict);
        Be32(VerdictCode, code);
        EndNest(verdict);
        EndNest(nest);
        EndExpression(data);
    }

    private int BeginExpression(string name)
    {
        BeginNest(ListElem);
        Str(ExprName, name);
        return BeginNest(ExprData);
    }

    private void EndExpression(int data)
    {
        EndNest(data);
        EndNest(_nests[_depth - 1]);
    }

    private void Message(ushort type, ushort flags, Statement.Kind kind, string? chain, int rule)
    {
        StartMessage((ushort)((SubsysNfTables << 8) | type), (ushort)(NetlinkSocket.NlmFRequest | NetlinkSocket.NlmFAck | flags), NfprotoInet, 0);
        _statements.Add(new Statement(kind, chain, rule));
    }

    private void StartMessage(ushort type, ushort flags, byte family, ushort resId)
    {
        Ensure(NetlinkSocket.HeaderLength + 4);
        _messageStart = _length;
        var header = _buffer.AsSpan(_length, NetlinkSocket.HeaderLength + 4);
        BinaryPrimitives.WriteUInt32LittleEndian(header, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], type);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], _sequence++);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], 0);

        // struct nfgenmsg: family, version (NFNETLINK_V0), res_id in network order.
        header[16] = family;
        header[17] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(header[18..], resId);
        _length += NetlinkSocket.HeaderLength + 4;
    }

    private void EndMessage() =>
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(_messageStart), (uint)(_length - _messageStart));

    private int BeginNest(ushort type)
    {
        Ensure(4);
        var start = _length;
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(_length + 2), (ushort)(type | NlaFNested));
        _length += 4;
        _nests[_depth++] = start;
        return start;
    }

    private void EndNest(int start)
    {
        _depth--;
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(start), (ushort)(_length - start));
    }

    private void Be32(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(v, value);
        Attribute(type, v);
    }

    private void Str(ushort type, string value)
    {
        var length = value.Length + 1;
        Ensure(4 + length + 3);
        WriteAttributeHeader(type, length);
        Encoding.ASCII.GetBytes(value, _buffer.AsSpan(_length));
        _buffer[_length + value.Length] = 0;
        _length += length;
        Pad();
    }

    private void Attribute(ushort type, ReadOnlySpan<byte> value)
    {
        Ensure(4 + value.Length + 3);
        WriteAttributeHeader(type, value.Length);
        value.CopyTo(_buffer.AsSpan(_length));
        _length += value.Length;
        Pad();
    }

    private void WriteAttributeHeader(ushort type, int valueLength)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(_length), (ushort)(4 + valueLength));
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(_length + 2), type);
        _length += 4;
    }

    private void Pad()
    {
        while (_length % 4 != 0)
        {
            _buffer[_length++] = 0;
        }
    }

    private void Ensure(int more)
    {
        if (_length + more > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + more));
        }
    }

    /// <summary>What one message of the batch does, to name it when the kernel refuses it.</summary>
    internal readonly record struct Statement(Statement.Kind What, string? Chain, int Rule)
    {
        internal enum Kind
        {
            Table,
            Flush,
            Chain,
            Set,
            SetElements,
            Rule,
            DeleteTable,
        }

        /// <summary>The statement as nft text, e.g. "add rule inet switchover_echo prerouting tcp dport 8080 ...".</summary>
        public string Describe(string table, HandoffTable? rendered) => What switch
        {
            Kind.Table => $"add table inet {table}",
            Kind.DeleteTable => $"delete table inet {table}",
            Kind.Flush => $"flush table inet {table}",
            Kind.Chain => $"add chain inet {table} {Chain}",
            Kind.Set => $"add the anonymous port set of a rule in chain {Chain}",
            Kind.SetElements => $"add the elements of an anonymous port set in chain {Chain}",
            _ => $"add rule inet {table} {Chain} {RuleText(rendered) ?? $"(rule {Rule + 1})"}",
        };

        private string? RuleText(HandoffTable? table)
        {
            if (table is null)
            {
                return null;
            }

            string? chain = null;
            var index = 0;
            foreach (var line in table.Render().Split('\n'))
            {
                if (line.StartsWith("\tchain ", StringComparison.Ordinal))
                {
                    chain = line["\tchain ".Length..].TrimEnd(' ', '{');
                    index = 0;
                }
                else if (chain == Chain && line.StartsWith("\t\t", StringComparison.Ordinal) && !line.StartsWith("\t\ttype ", StringComparison.Ordinal))
                {
                    if (index++ == Rule)
                    {
                        return line.Trim();
                    }
                }
            }

            return null;
        }
    }
}
