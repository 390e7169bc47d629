using System.ComponentModel;
using System.Runtime.InteropServices;
using Switchover.Netfilter;
using Switchover.Processes;

namespace Switchover.Cli;

/// <summary>Turns failures of nft and conntrack into one line that says what happened and what to do.</summary>
internal static class ToolErrors
{
    public static string Nft(NftException e, string? nftPath, string doing) => OneLine(e.Command switch
    {
        CommandNotFoundException notFound => NotFound("nft", nftPath ?? "nft", notFound, "nftables", "--nft"),
        { InnerException: DllNotFoundException } c =>
            $"libnftables could not be loaded ({c.Message}). Install it (apt-get install libnftables1), or pass --nft PATH to use an nft program.",
        var c when NotPermitted(c) => $"nft may not {doing} ({c.StandardError}). Run switchover as root, or with CAP_NET_ADMIN.",
        var c => $"nft failed to {doing}: {c.Message}",
    });

    public static string Conntrack(Exception e, string? conntrackPath) => OneLine(e switch
    {
        ConntrackException c => c.Message,
        { InnerException: CommandNotFoundException notFound } => NotFound("conntrack", conntrackPath ?? "conntrack", notFound, "conntrack", "--conntrack"),
        CommandNotFoundException notFound => NotFound("conntrack", conntrackPath ?? "conntrack", notFound, "conntrack", "--conntrack"),
        CommandException c when NotPermitted(c) =>
            $"conntrack may not read the connection table ({c.StandardError}). Run switchover as root, or with CAP_NET_ADMIN.",
        _ => $"conntrack failed: {e.Message}",
    });

    /// <summary>Tools write several lines to stderr (nft adds its netlink error); an error of switchover is one line.</summary>
    public static string OneLine(string message) =>
        string.Join("; ", message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    // nft says "Operation not permitted"; conntrack says "you must be root or get CAP_NET_ADMIN capability".
    private static bool NotPermitted(CommandException e) =>
        e.StandardError.Contains("Operation not permitted", StringComparison.Ordinal) ||
        e.StandardError.Contains("must be root", StringComparison.Ordinal);

    private static string NotFound(string tool, string path, CommandNotFoundException e, string package, string option)
    {
        // Process.Start's own message also names the working directory; the errno text is what matters.
        var cause = e.InnerException is Win32Exception w ? Marshal.GetPInvokeErrorMessage(w.NativeErrorCode) : e.Message;
        return $"{tool} could not be started from '{path}' ({cause}). Install it (apt-get install {package}), or pass {option} PATH.";
    }
}
