using System.Globalization;

namespace Switchover;

/// <summary>A port clients connect to. Nothing listens on it: NAT sends it to a generation's private port.</summary>
public sealed record PublicEndpoint(int Port)
{
    public PublicEndpoint Validated() =>
        Port is >= 1 and <= 65535
            ? this
            : throw new ArgumentOutOfRangeException(nameof(Port), Port, $"Public port {Port} is out of range; use 1-65535.");

    /// <summary>Parses "tcp/8080" or "8080".</summary>
    public static PublicEndpoint Parse(string text)
    {
        var span = text.Trim();
        if (span.StartsWith("tcp/", StringComparison.OrdinalIgnoreCase))
        {
            span = span[4..];
        }

        if (!int.TryParse(span, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            throw new FormatException($"'{text}' is not a public endpoint. Write it as tcp/PORT with PORT in 1-65535, e.g. tcp/8080.");
        }

        return new PublicEndpoint(port);
    }

    public override string ToString() => $"tcp/{Port.ToString(CultureInfo.InvariantCulture)}";
}
