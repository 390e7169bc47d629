using System.Net;

namespace Switchover.Lab;

/// <summary>
/// Where load goes: sockets are created in <paramref name="Namespace"/> and connect to <paramref name="EndPoint"/>.
/// For example the network path (client namespace to 192.0.2.1:8080) or the local path (server namespace to 127.0.0.1:8080).
/// </summary>
/// <param name="Name">Names the target in failures and summaries, e.g. "net-v4" or "local-v6".</param>
public sealed record LoadTarget(NetworkNamespace Namespace, IPEndPoint EndPoint, string Name)
{
    public override string ToString() => $"{Name} ({Namespace.Name} -> {EndPoint})";
}
