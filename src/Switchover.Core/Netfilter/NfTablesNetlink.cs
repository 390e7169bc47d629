using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Switchover.Interop;
using Switchover.Processes;
using Switchover.State;

namespace Switchover.Netfilter;

/// <summary>
/// The handoff table applied through our own nf_tables batches (<see cref="NfTablesBatch"/>) on one NETLINK_NETFILTER
/// socket kept for the life of the process, used under a lock. No text is parsed and no cache is read: a transaction
/// is one sendmsg, the kernel's commit, and its acks. The socket belongs to the network namespace of the thread that
/// opened it: the first call's, or the caller's with <see cref="OpenHere"/>.
/// </summary>
internal sealed class NfTablesNetlink : IDisposable
{
    /// <summary>How failures name this transport.</summary>
    public const string Name = "nf_tables netlink";

    private const int EOPNOTSUPP = 95;
    private const int EPROTONOSUPPORT = 93;

    private readonly Lock _gate = new();
    private readonly NfTablesBatch _batch = new();
    private NetlinkSocket? _socket;

    private NfTablesNetlink()
    {
    }

    /// <summary>The process's socket, opened on first use.</summary>
    public static NfTablesNetlink Instance { get; } = new();

    /// <summary>A socket of its own, opened now in the network namespace of the calling thread (tests and the benchmark use it from a namespace thread).</summary>
    internal static NfTablesNetlink OpenHere()
    {
        var client = new NfTablesNetlink();
        client._socket = Open();
        return client;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _socket?.Dispose();
            _socket = null;
        }
    }

    /// <summary>Declares, empties and redefines the table in one batch: all of it, or nothing.</summary>
    /// <exception cref="NftException">The kernel refused a message (named, with its errno), or could not be asked.</exception>
    public void Apply(HandoffTable table, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            _batch.EncodeApply(table, NetlinkSocket.NextSequence());
            Commit(table.Namespace, table);
        }
    }

    /// <summary>Deletes the table if it exists, in one batch.</summary>
    public void DeleteTable(NamespaceName name, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            _batch.EncodeDelete(name, NetlinkSocket.NextSequence());
            Commit(name, null);
        }
    }

    /// <summary>Proves that nf_tables is there and that this process may change rules, without changing any (NFT_MSG_GETGEN).</summary>
    public void Check(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            var socket = Socket();
            _batch.EncodeGetGeneration(NetlinkSocket.NextSequence());
            var sequence = _batch.FirstSequence;
            try
            {
                socket.Dump(_batch.Bytes, static (_, _) => { }, cancellationToken);
            }
            catch (NetlinkException e)
            {
                throw Refused(e.Errno, "get the ruleset's generation (NFT_MSG_GETGEN)", sequence, whole: true);
            }
        }
    }

    private void Commit(NamespaceName name, HandoffTable? table)
    {
        var socket = Socket();
        var first = _batch.FirstSequence;
        var statements = _batch.Statements;
        try
        {
            socket.Send(_batch.Bytes);
        }
        catch (NetlinkException e)
        {
            throw Failed($"sending the batch failed: {e.Message}", e);
        }

        // nfnetlink handles the whole batch inside our sendmsg and queues every ack before it returns, so what is
        // queued now is the whole answer. Only a kernel that does otherwise makes us wait (up to the socket's timeout).
        Span<int> errors = statements.Count <= 256 ? stackalloc int[statements.Count] : new int[statements.Count];
        Span<bool> acked = statements.Count <= 256 ? stackalloc bool[statements.Count] : new bool[statements.Count];
        var pending = statements.Count;
        var batchError = 0;
        var wait = false;
        while (pending > 0 && batchError == 0)
        {
            ReadOnlySpan<byte> datagram;
            try
            {
                datagram = socket.Receive(wait);
            }
            catch (NetlinkException e)
            {
                throw Failed($"the kernel acknowledged {statements.Count - pending} of the batch's {statements.Count} messages ({e.Message}); the table may or may not have changed", e);
            }

            if (datagram.IsEmpty)
            {
                wait = true;
                continue;
            }

            while (datagram.Length >= NetlinkSocket.HeaderLength)
            {
                var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(datagram);
                if (length < NetlinkSocket.HeaderLength || length > datagram.Length)
                {
                    break;
                }

                var type = BinaryPrimitives.ReadUInt16LittleEndian(datagram[4..]);
                var index = (long)BinaryPrimitives.ReadUInt32LittleEndian(datagram[8..]) - first - 1;
                if (type == NetlinkSocket.NlmsgError && length >= NetlinkSocket.HeaderLength + 4)
                {
                    var error = -BinaryPrimitives.ReadInt32LittleEndian(datagram[NetlinkSocket.HeaderLength..]);
                    if (index == -1)
                    {
                        // On NFNL_MSG_BATCH_BEGIN: the batch as a whole was refused (EPERM, nf_tables missing).
                        batchError = error;
                    }
                    else if (index >= 0 && index < statements.Count && !acked[(int)index])
                    {
                        acked[(int)index] = true;
                        errors[(int)index] = error;
                        pending--;
                    }
                }

                var aligned = NetlinkSocket.Align(length);
                datagram = aligned >= datagram.Length ? [] : datagram[aligned..];
            }
        }

        if (batchError != 0)
        {
            throw Refused(batchError, "begin the batch", first, whole: true);
        }

        for (var i = 0; i < errors.Length; i++)
        {
            if (errors[i] != 0)
            {
                var more = 0;
                for (var j = i + 1; j < errors.Length; j++)
                {
                    more += errors[j] != 0 ? 1 : 0;
                }

                var what = statements[i].Describe(name.TableName, table) + (more > 0 ? $" (and {more} later message{(more == 1 ? "" : "s")})" : "");
                throw Refused(errors[i], what, first + 1 + (uint)i, whole: false);
            }
        }
    }

    private NetlinkSocket Socket() => _socket ??= Open();

    private static NetlinkSocket Open()
    {
        try
        {
            return NetlinkSocket.Open(NetlinkSocket.NetlinkNetfilter);
        }
        catch (NetlinkException e)
        {
            throw e.Errno == EPROTONOSUPPORT
                ? NftClient.Explain(new CommandException(Name, 1, Unavailable(e.Errno), $"{Name}: {e.Message}", e))
                : Failed($"the netlink socket could not be opened: {e.Message}", e);
        }
    }

    /// <summary>The kernel refused: nothing was changed (the batch is one transaction). The message names the statement and the errno.</summary>
    /// <param name="whole">The answer is about the batch (or request) as a whole: EOPNOTSUPP there means nf_tables is missing.</param>
    private static NftException Refused(int errno, string what, uint sequence, bool whole)
    {
        var text = Marshal.GetPInvokeErrorMessage(errno);
        var error = errno == EOPNOTSUPP && whole ? Unavailable(errno) : text;
        return NftClient.Explain(new CommandException(Name, 1, error,
            $"'{Name}' refused to {what} (netlink sequence {sequence}): {text} (errno {errno}); nothing was changed"));
    }

    private static string Unavailable(int errno) => $"nf_tables is not available in this kernel: {Marshal.GetPInvokeErrorMessage(errno)}";

    private static NftException Failed(string message, Exception inner) =>
        NftClient.Explain(new CommandException(Name, null, message, $"'{Name}': {message}", inner));
}
