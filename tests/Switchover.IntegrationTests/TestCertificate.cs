using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>
/// A self-signed certificate made by openssl for one test: PEM certificate and key files in a temporary directory of
/// their own, with subject alternative names for the server's addresses and for localhost. Disposing deletes the directory.
/// </summary>
internal sealed class TestCertificate : IAsyncDisposable
{
    private readonly NetworkNamespace _runIn;
    private readonly IReadOnlyList<IPAddress> _addresses;
    private int _generation;

    private TestCertificate(NetworkNamespace runIn, IReadOnlyList<IPAddress> addresses, string directory)
    {
        _runIn = runIn;
        _addresses = addresses;
        Directory = directory;
    }

    public string Directory { get; }

    public string CertificatePath => Path.Combine(Directory, "cert.pem");

    public string KeyPath => Path.Combine(Directory, "key.pem");

    /// <summary>SHA-256 fingerprint of the certificate now on disk, upper-case hex without separators.</summary>
    public string Sha256 { get; private set; } = string.Empty;

    /// <summary>Makes a key pair and certificate valid for <paramref name="addresses"/> and localhost (127.0.0.1, ::1).</summary>
    public static async Task<TestCertificate> CreateAsync(NetworkNamespace runIn, IReadOnlyList<IPAddress> addresses, CancellationToken cancellationToken)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("switchover-tls-").FullName;
        var certificate = new TestCertificate(runIn, addresses, directory);
        try
        {
            await certificate.WriteNewAsync(certificate.CertificatePath, certificate.KeyPath, cancellationToken);
            return certificate;
        }
        catch
        {
            await certificate.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Replaces the files with a new key pair and certificate, as a deploy tool or certbot would: written beside the
    /// old ones, then renamed over them, key first, so that a reader never sees a half-written file.
    /// </summary>
    public async Task ReplaceAsync(CancellationToken cancellationToken)
    {
        var next = Interlocked.Increment(ref _generation).ToString(CultureInfo.InvariantCulture);
        var certificate = Path.Combine(Directory, $"cert.{next}.tmp");
        var key = Path.Combine(Directory, $"key.{next}.tmp");
        var previous = Sha256;
        await WriteNewAsync(certificate, key, cancellationToken);
        File.Move(key, KeyPath, overwrite: true);
        File.Move(certificate, CertificatePath, overwrite: true);
        Sha256 = FingerprintOf(await File.ReadAllTextAsync(CertificatePath, cancellationToken));
        Assert.NotEqual(previous, Sha256);
    }

    public static string FingerprintOf(string pem)
    {
        using var certificate = X509Certificate2.CreateFromPem(pem);
        return certificate.GetCertHashString(HashAlgorithmName.SHA256);
    }

    public ValueTask DisposeAsync()
    {
        if (System.IO.Directory.Exists(Directory))
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }

        return ValueTask.CompletedTask;
    }

    private async Task WriteNewAsync(string certificatePath, string keyPath, CancellationToken cancellationToken)
    {
        var names = string.Join(",", _addresses.Select(a => "IP:" + a).Concat(["DNS:localhost", "IP:127.0.0.1", "IP:::1"]));
        var result = await _runIn.TryRunAsync("openssl",
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", keyPath, "-out", certificatePath, "-days", "2",
            "-subj", "/CN=switchover-test " + Path.GetFileName(Directory),
            "-addext", "subjectAltName=" + names,
        ], cancellationToken);
        Assert.True(result.ExitCode == 0, $"openssl could not make a test certificate (exit {result.ExitCode}): {result.StandardError}");
        Sha256 = FingerprintOf(await File.ReadAllTextAsync(certificatePath, cancellationToken));
    }
}

/// <summary>What <c>openssl s_client</c> negotiated with a server, and the certificate the server sent.</summary>
internal sealed partial record TlsHandshake(string? Protocol, string? Alpn, string? CertificateSha256, string Output)
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
            pem.Success ? TestCertificate.FingerprintOf(pem.Value) : null,
            output);
    }

    public override string ToString() => $"protocol {Protocol ?? "(none)"}, ALPN {Alpn ?? "(none)"}, certificate {CertificateSha256 ?? "(none)"}";

    // "New, TLSv1.3, Cipher is ...": printed for every version, whereas the "Protocol :" line of the session block is
    // missing for TLS 1.3 when s_client closes before the server's session ticket arrives.
    [GeneratedRegex(@"^New, (TLSv[\d.]+), Cipher is ", RegexOptions.Multiline)]
    private static partial Regex ProtocolLine();

    [GeneratedRegex(@"^ALPN protocol: (\S+)", RegexOptions.Multiline)]
    private static partial Regex AlpnLine();

    [GeneratedRegex(@"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")]
    private static partial Regex CertificateBlock();
}
