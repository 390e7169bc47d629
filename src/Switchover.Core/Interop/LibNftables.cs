using System.Runtime.InteropServices;

namespace Switchover.Interop;

/// <summary>
/// libnftables (Debian's libnftables1, the library the <c>nft</c> program is a thin shell around): the same parser,
/// the same ruleset text, the same one-batch transaction, without starting a program. Declarations follow
/// include/nftables/libnftables.h of nftables 1.0.x; only the calls Switchover makes are bound.
/// </summary>
internal static partial class LibNftables
{
    public const string Library = "libnftables.so.1";

    /// <summary>NFT_CTX_DEFAULT: the context opens its own NETLINK_NETFILTER socket.</summary>
    public const uint ContextDefault = 0;

    [LibraryImport(Library, EntryPoint = "nft_ctx_new")]
    public static partial SafeNftContextHandle ContextNew(uint flags);

    [LibraryImport(Library, EntryPoint = "nft_ctx_free")]
    public static partial void ContextFree(IntPtr context);

    [LibraryImport(Library, EntryPoint = "nft_ctx_set_dry_run")]
    public static partial void SetDryRun(SafeNftContextHandle context, [MarshalAs(UnmanagedType.U1)] bool dryRun);

    [LibraryImport(Library, EntryPoint = "nft_ctx_buffer_output")]
    public static partial int BufferOutput(SafeNftContextHandle context);

    [LibraryImport(Library, EntryPoint = "nft_ctx_buffer_error")]
    public static partial int BufferError(SafeNftContextHandle context);

    /// <summary>The output since the last call (the library rewinds its buffer); owned by the context, copy it before the next call.</summary>
    [LibraryImport(Library, EntryPoint = "nft_ctx_get_output_buffer")]
    public static partial IntPtr GetOutputBuffer(SafeNftContextHandle context);

    [LibraryImport(Library, EntryPoint = "nft_ctx_get_error_buffer")]
    public static partial IntPtr GetErrorBuffer(SafeNftContextHandle context);

    /// <summary>Parses, evaluates and (unless dry-run) sends the commands as one batch; 0 on success.</summary>
    [LibraryImport(Library, EntryPoint = "nft_run_cmd_from_buffer", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int RunCommand(SafeNftContextHandle context, string buffer);
}

/// <summary>An <c>struct nft_ctx *</c>; freed with nft_ctx_free.</summary>
internal sealed class SafeNftContextHandle : SafeHandle
{
    public SafeNftContextHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        LibNftables.ContextFree(handle);
        return true;
    }
}
