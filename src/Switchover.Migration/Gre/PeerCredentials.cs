using System.Net.Sockets;
using Switchover.Migration.Interop;

namespace Switchover.Migration.Gre;

/// <summary>Who is at the other end of a Unix socket, as the kernel recorded at connect time (SO_PEERCRED).</summary>
internal readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
{
    /// <summary>struct ucred: pid_t pid, uid_t uid, gid_t gid.</summary>
    private const int UcredSize = 12;

    public static PeerCredentials Read(Socket socket)
    {
        Span<byte> ucred = stackalloc byte[UcredSize];
        var length = socket.GetRawSocketOption(Libc.SOL_SOCKET, Libc.SO_PEERCRED, ucred);
        if (length != UcredSize)
        {
            throw new InvalidOperationException($"SO_PEERCRED returned {length} bytes instead of {UcredSize}.");
        }

        return new PeerCredentials(
            BitConverter.ToInt32(ucred),
            BitConverter.ToUInt32(ucred[4..]),
            BitConverter.ToUInt32(ucred[8..]));
    }

    /// <summary>Root, and the user the agent runs as, may control it; nobody else.</summary>
    public static bool IsAllowed(uint peerUid, uint agentUid) => peerUid == 0 || peerUid == agentUid;

    public override string ToString() => $"pid {Pid} uid {Uid} gid {Gid}";
}
