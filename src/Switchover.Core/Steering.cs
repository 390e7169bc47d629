using System.Text.Json.Serialization;

namespace Switchover;

/// <summary>How the public ports reach the active generation's private listeners.</summary>
[JsonConverter(typeof(State.EnumNameConverter<Steering>))]
public enum Steering
{
    /// <summary>
    /// TPROXY in prerouting hands each new connection's SYN to the private listener and keeps its destination port:
    /// the host's firewall sees the public port, and no NAT is involved. The listeners carry IP_TRANSPARENT.
    /// </summary>
    Tproxy,

    /// <summary>
    /// NAT REDIRECT to the private port. A host firewall's input hook then sees the private port, so a default-deny
    /// firewall must allow the private ports too; kept for hosts without TPROXY.
    /// </summary>
    Redirect,
}
