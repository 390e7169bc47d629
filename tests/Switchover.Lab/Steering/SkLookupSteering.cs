using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Switchover.Lab;

/// <summary>
/// Steering by a BPF <c>sk_lookup</c> program (Linux 5.9+), measured against TPROXY and NAT in the overhead scenario:
/// the program runs at the kernel's own listener lookup, in the namespace it is attached to, and hands a TCP SYN for
/// the public port to the listener in a one-entry SOCKMAP, whatever port that listener is bound to. No nftables rule,
/// no conntrack entry, no NAT: established packets never meet it (the established lookup comes first), and the
/// accepted socket's local address is the public one. A handoff is one map update (<see cref="Steer"/>): a SYN sees
/// the old listener or the new one, never neither. This is the measurement's prototype, not (yet) a steering mode of
/// the product; see docs/kernel-speed.md. The program is our own 21 instructions, written here as bytecode (no
/// compiler, no libbpf). Root (CAP_BPF, CAP_NET_ADMIN; CAP_SYS_PTRACE to take another process's listener).
/// </summary>
public sealed partial class SkLookupSteering : IDisposable
{
    private const int BpfMapCreate = 0;
    private const int BpfMapUpdateElem = 2;
    private const int BpfProgLoad = 5;
    private const int BpfLinkCreate = 28;
    private const int MapTypeSockmap = 15;
    private const int ProgTypeSkLookup = 30;
    private const int AttachTypeSkLookup = 36;
    private const int SysBpf = 321;
    private const int SysPidfdOpen = 434;
    private const int SysPidfdGetfd = 438;
    private const int AttrSize = 128;

    private readonly int _map;
    private readonly int _program;
    private readonly int _link;

    private SkLookupSteering(int map, int program, int link) => (_map, _program, _link) = (map, program, link);

    /// <summary>
    /// Attaches a program to network namespace <paramref name="networkNamespace"/> (its /run/netns name) that steers
    /// TCP connections to <paramref name="publicPort"/> to <paramref name="listener"/>, a TCP listening socket's
    /// descriptor (the map takes its own reference).
    /// </summary>
    public static SkLookupSteering Attach(string networkNamespace, int publicPort, int listener)
    {
        var map = -1;
        var program = -1;
        var netns = -1;
        try
        {
            map = CreateSockmap();
            Update(map, listener);
            program = Load(map, publicPort);
            netns = Open("/run/netns/" + networkNamespace);
            var link = CreateLink(program, netns);
            return new SkLookupSteering(map, program, link);
        }
        catch
        {
            Close(map);
            Close(program);
            throw;
        }
        finally
        {
            // The link holds its own reference to the namespace.
            Close(netns);
        }
    }

    /// <summary>As <see cref="Attach(string, int, int)"/>, with the listener on <paramref name="listenerPort"/> of process <paramref name="pid"/>.</summary>
    public static SkLookupSteering Attach(string networkNamespace, int publicPort, int pid, int listenerPort)
    {
        var listener = TakeListener(pid, listenerPort);
        try
        {
            return Attach(networkNamespace, publicPort, listener);
        }
        finally
        {
            Close(listener);
        }
    }

    /// <summary>The handoff: new connections go to <paramref name="listener"/> from the next SYN on, in one map update.</summary>
    public void Steer(int listener) => Update(_map, listener);

    /// <summary>Detaches: the link's last descriptor closed, the program and the map (and its socket reference) go.</summary>
    public void Dispose()
    {
        Close(_link);
        Close(_program);
        Close(_map);
    }

    /// <summary>The bytecode: protocol TCP and local port <paramref name="publicPort"/>, or pass; else assign map[0].</summary>
    internal static ulong[] Program(int mapFd, int publicPort)
    {
        const int pass = 19;
        return
        [
            Insn(0xbf, 6, 1, 0, 0),                        // 0: r6 = r1 (ctx)
            Insn(0x61, 2, 6, 12, 0),                       // 1: r2 = ctx->protocol
            Insn(0x55, 2, 0, pass - 3, 6),                 // 2: if r2 != IPPROTO_TCP goto pass
            Insn(0x61, 2, 6, 60, 0),                       // 3: r2 = ctx->local_port (host order)
            Insn(0x55, 2, 0, pass - 5, publicPort),        // 4: if r2 != port goto pass
            Insn(0x62, 10, 0, -4, 0),                      // 5: *(u32 *)(fp - 4) = 0 (the key)
            Insn(0x18, 1, 1, 0, mapFd), Insn(0, 0, 0, 0, 0), // 6-7: r1 = the map (BPF_PSEUDO_MAP_FD)
            Insn(0xbf, 2, 10, 0, 0),                       // 8: r2 = fp
            Insn(0x07, 2, 0, 0, -4),                       // 9: r2 += -4
            Insn(0x85, 0, 0, 0, 1),                        // 10: r0 = bpf_map_lookup_elem(r1, r2)
            Insn(0x15, 0, 0, pass - 12, 0),                // 11: if r0 == NULL goto pass
            Insn(0xbf, 7, 0, 0, 0),                        // 12: r7 = r0 (the socket, referenced)
            Insn(0xbf, 1, 6, 0, 0),                        // 13: r1 = ctx
            Insn(0xbf, 2, 7, 0, 0),                        // 14: r2 = socket
            Insn(0xb7, 3, 0, 0, 0),                        // 15: r3 = 0 (flags)
            Insn(0x85, 0, 0, 0, 124),                      // 16: bpf_sk_assign(ctx, socket, 0)
            Insn(0xbf, 1, 7, 0, 0),                        // 17: r1 = socket
            Insn(0x85, 0, 0, 0, 86),                       // 18: bpf_sk_release(socket)
            Insn(0xb7, 0, 0, 0, 1),                        // 19 (pass): r0 = SK_PASS
            Insn(0x95, 0, 0, 0, 0),                        // 20: exit
        ];

        static ulong Insn(byte code, int dst, int src, short offset, int imm) =>
            code | (ulong)(byte)(dst | (src << 4)) << 8 | (ulong)(ushort)offset << 16 | (ulong)(uint)imm << 32;
    }

    private static int TakeListener(int pid, int port)
    {
        var pidfd = (int)Syscall(SysPidfdOpen, pid, 0, 0);
        if (pidfd < 0)
        {
            throw Failure($"pidfd_open({pid})");
        }

        try
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
            {
                if (new FileInfo(entry).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) != true || !int.TryParse(Path.GetFileName(entry), out var target))
                {
                    continue;
                }

                var fd = (int)Syscall(SysPidfdGetfd, pidfd, target, 0);
                if (fd < 0)
                {
                    continue;
                }

                if (IsTcpListenerOn(fd, port))
                {
                    return fd;
                }

                Close(fd);
            }
        }
        finally
        {
            Close(pidfd);
        }

        throw new InvalidOperationException($"Process {pid} holds no TCP listener on port {port}.");
    }

    private static unsafe bool IsTcpListenerOn(int fd, int port)
    {
        const int SolSocket = 1, SoType = 3, SoAcceptConn = 30, SockStream = 1;
        int type = 0, listening = 0;
        var size = sizeof(int);
        if (GetSockOpt(fd, SolSocket, SoType, &type, ref size) != 0 || type != SockStream ||
            GetSockOpt(fd, SolSocket, SoAcceptConn, &listening, ref size) != 0 || listening == 0)
        {
            return false;
        }

        var address = stackalloc byte[128];
        var length = 128;
        return GetSockName(fd, address, ref length) == 0 && BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(address + 2, 2)) == port;
    }

    private static unsafe int CreateSockmap()
    {
        var attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        var words = (uint*)attr;
        words[0] = MapTypeSockmap;
        words[1] = 4; // key: u32
        words[2] = 8; // value: the socket's descriptor on update, its cookie on lookup
        words[3] = 1;
        return Check(Bpf(BpfMapCreate, attr), "BPF_MAP_CREATE (SOCKMAP)");
    }

    private static unsafe void Update(int map, int socket)
    {
        uint key = 0;
        ulong value = (ulong)socket;
        var attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)attr = (uint)map;
        *(ulong*)(attr + 8) = (ulong)&key;
        *(ulong*)(attr + 16) = (ulong)&value;
        Check(Bpf(BpfMapUpdateElem, attr), "BPF_MAP_UPDATE_ELEM (the listener)");
    }

    private static unsafe int Load(int map, int publicPort)
    {
        var code = Program(map, publicPort);
        var license = "Dual MIT/GPL\0"u8;
        var log = new byte[64 * 1024];
        var attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        fixed (ulong* insns = code)
        fixed (byte* licenseBytes = license)
        fixed (byte* logBuffer = log)
        {
            *(uint*)attr = ProgTypeSkLookup;
            *(uint*)(attr + 4) = (uint)code.Length;
            *(ulong*)(attr + 8) = (ulong)insns;
            *(ulong*)(attr + 16) = (ulong)licenseBytes;
            *(uint*)(attr + 24) = 1; // log level
            *(uint*)(attr + 28) = (uint)log.Length;
            *(ulong*)(attr + 32) = (ulong)logBuffer;
            "switchover_lkp"u8.CopyTo(new Span<byte>(attr + 48, 16));
            *(uint*)(attr + 68) = AttachTypeSkLookup;
            var fd = Bpf(BpfProgLoad, attr);
            if (fd < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                var verifier = Encoding.UTF8.GetString(log, 0, Math.Max(0, Array.IndexOf(log, (byte)0)));
                throw new InvalidOperationException($"BPF_PROG_LOAD (sk_lookup) failed: {Marshal.GetPInvokeErrorMessage(errno)}. The verifier said:\n{verifier}");
            }

            return fd;
        }
    }

    private static unsafe int CreateLink(int program, int netns)
    {
        var attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        var words = (uint*)attr;
        words[0] = (uint)program;
        words[1] = (uint)netns;
        words[2] = AttachTypeSkLookup;
        return Check(Bpf(BpfLinkCreate, attr), "BPF_LINK_CREATE (sk_lookup on the namespace)");
    }

    private static int Open(string path)
    {
        var fd = OpenFile(path, 0x80000 /* O_RDONLY | O_CLOEXEC */);
        return fd >= 0 ? fd : throw Failure("open " + path);
    }

    private static unsafe int Bpf(int command, byte* attr) => (int)Syscall(SysBpf, command, (nint)attr, AttrSize);

    private static int Check(int result, string what) => result >= 0 ? result : throw Failure(what);

    private static InvalidOperationException Failure(string what) =>
        new($"{what} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}. It needs root on Linux 5.9 or later.");

    private static void Close(int fd)
    {
        if (fd >= 0)
        {
            _ = CloseFile(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial nint Syscall(nint number, nint a, nint b, nint c);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static unsafe partial int GetSockOpt(int fd, int level, int name, void* value, ref int length);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    private static unsafe partial int GetSockName(int fd, byte* address, ref int length);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenFile(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int CloseFile(int fd);
}
