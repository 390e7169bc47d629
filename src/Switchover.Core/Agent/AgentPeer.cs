using System.Buffers.Binary;
using System.Net.Sockets;
using Switchover.Interop;
using Switchover.State;

namespace Switchover.Agent;

/// <summary>
/// Who is at the other end of an agent connection, as the kernel recorded it when the peer connected: SO_PEERCRED
/// (pid, uid, gid), SO_PEERGROUPS (its supplementary groups), and the process identity (pid plus start time), read
/// through SO_PEERPIDFD (kernel 6.5) so that a pid reused after the peer died is never mistaken for it.
/// </summary>
internal sealed record AgentPeer(int Pid, uint Uid, uint Gid, IReadOnlyList<uint> Groups, ProcessIdentity? Process)
{
    /// <summary>struct ucred: pid_t pid, uid_t uid, gid_t gid.</summary>
    private const int UcredSize = 12;

    public bool IsRoot => Uid == 0;

    public static AgentPeer Read(Socket socket)
    {
        var fd = (int)socket.SafeHandle.DangerousGetHandle();
        Span<byte> ucred = stackalloc byte[UcredSize];
        var length = Libc.GetSocketOption(fd, Libc.SOL_SOCKET, Libc.SO_PEERCRED, ucred);
        if (length != UcredSize)
        {
            throw new InvalidOperationException($"SO_PEERCRED returned {length} instead of {UcredSize} bytes.");
        }

        var pid = BinaryPrimitives.ReadInt32LittleEndian(ucred);
        var uid = BinaryPrimitives.ReadUInt32LittleEndian(ucred[4..]);
        var gid = BinaryPrimitives.ReadUInt32LittleEndian(ucred[8..]);
        return new AgentPeer(pid, uid, gid, ReadGroups(fd), ReadProcess(fd, pid));
    }

    /// <summary>True when the peer's primary or any supplementary group is <paramref name="gid"/>.</summary>
    public bool InGroup(uint gid) => Gid == gid || Groups.Contains(gid);

    public override string ToString() => $"pid {Pid} uid {Uid} gid {Gid}";

    private static uint[] ReadGroups(int fd)
    {
        // SO_PEERGROUPS answers ERANGE with the length it needs when the buffer is too small.
        var buffer = new byte[64 * sizeof(uint)];
        var length = Libc.GetSocketOption(fd, Libc.SOL_SOCKET, Libc.SO_PEERGROUPS, buffer);
        if (length == -Libc.ERANGE)
        {
            buffer = new byte[65536 * sizeof(uint)];
            length = Libc.GetSocketOption(fd, Libc.SOL_SOCKET, Libc.SO_PEERGROUPS, buffer);
        }

        if (length < 0)
        {
            return [];
        }

        var groups = new uint[length / sizeof(uint)];
        for (var i = 0; i < groups.Length; i++)
        {
            groups[i] = BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(i * sizeof(uint)));
        }

        return groups;
    }

    /// <summary>
    /// The peer's identity, or null when it has exited already. With SO_PEERPIDFD the pidfd names the process that
    /// connected; /proc/PID/stat read while that pidfd says it still runs is that process's. Without it (kernel
    /// before 6.5), pidfd_open of the SO_PEERCRED pid, which a pid reused in between could fool.
    /// </summary>
    private static ProcessIdentity? ReadProcess(int fd, int pid)
    {
        var pidfd = Libc.GetSocketOptionInt(fd, Libc.SOL_SOCKET, Libc.SO_PEERPIDFD, out _) is { } peerPidfd
            ? new SafePidfdHandle(peerPidfd)
            : Libc.TryPidfdOpen(pid, out _);
        using (pidfd)
        {
            var identity = ProcessIdentity.Read(pid);
            return identity is not null && (pidfd is null || !PidfdWatcher.HasExited(pidfd)) ? identity : null;
        }
    }
}
