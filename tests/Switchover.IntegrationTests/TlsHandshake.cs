using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>What <c>openssl s_client</c> (an independent TLS client) negotiated with a server, and the certificate the server sent.</summary>
internal sealed partial record TlsHandshake(string? Protocol, string? Alpn, string? Thumbprint, string Output)
{
    /// <summary>
    /// Handshakes with <paramref name="to"/> from <paramref name="from"/> with exactly one TLS version
    /// (<c>-tls1_2</c> or <c>-tls1_3</c>), offering <paramref name="alpn"/>, and closes.
    /// </summary>
    public static async Task<TlsHandshake> RunAsync(NetworkNamespace from, IPEndPoint to, string versionFlag, string alpn, CancellationToken cancellationToken)
    {
        // Standard input is closed at once, so s_client ends right after the handshake.
        var result = await from.TryRunAsync("openssl",
            ["s_client", "-connect", to.ToString(), versionFlag, "-alpn", alpn, "-servername", "localhost"], cancellationToken);
        var output = result.StandardOutput + result.StandardError;
        var protocol = ProtocolLine().Match(output);
        var negotiated = AlpnLine().Match(output);
        var pem = CertificateBlock().Match(output);
        return new TlsHandshake(
            protocol.Success ? protocol.Groups[1].Value : null,
            negotiated.Success ? negotiated.Groups[1].Value : null,
            pem.Success ? ThumbprintOf(pem.Value) : null,
            output);
    }

    public override string ToString() => $"protocol {Protocol ?? "(none)"}, ALPN {Alpn ?? "(none)"}, certificate {Thumbprint ?? "(none)"}";

    /// <summary>The thumbprint as <see cref="TestCertificate.Thumbprint"/> gives it (X509Certificate.GetCertHashString).</summary>
    private static string ThumbprintOf(string pem)
    {
        using var certificate = X509Certificate2.CreateFromPem(pem);
        return certificate.GetCertHashString();
    }

    // "New, TLSv1.3, Cipher is ...": printed for every version, whereas the "Protocol :" line of the session block is
    // missing for TLS 1.3 when s_client closes before the server's session ticket arrives.
    [GeneratedRegex(@"^New, (TLSv[\d.]+), Cipher is ", RegexOptions.Multiline)]
    private static partial Regex ProtocolLine();

    [GeneratedRegex(@"^ALPN protocol: (\S+)", RegexOptions.Multiline)]
    private static partial Regex AlpnLine();

    [GeneratedRegex(@"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")]
    private static partial Regex CertificateBlock();
}
