using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Switchover.Hosting;

namespace Switchover.Tests;

public sealed class CertificateFilesTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("switchover-cert-test-").FullName;

    private string CertPath => Path.Combine(_directory, "cert.pem");

    private string KeyPath => Path.Combine(_directory, "key.pem");

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact(Timeout = 20_000)]
    public async Task A_renewed_pair_is_served_and_a_broken_one_is_ignored_until_it_loads()
    {
        var first = Write("first");
        var files = new CertificateFiles(CertPath, KeyPath, password: null, NullLogger.Instance);
        Assert.Equal(first, files.Select(null, null)!.Thumbprint);

        // A half-written renewal: the certificate is new, the key is not there yet.
        var second = Write("second", writeKey: false);
        File.WriteAllText(KeyPath, "-----BEGIN PRIVATE KEY-----\nnot yet\n");
        await Task.Delay(TimeSpan.FromSeconds(1.2));
        Assert.Equal(first, files.Select(null, null)!.Thumbprint);

        second = Write("second");
        await Task.Delay(TimeSpan.FromSeconds(1.2));
        Assert.Equal(second, files.Select(null, null)!.Thumbprint);
    }

    [Fact]
    public void Without_a_loadable_certificate_at_start_the_error_is_thrown() =>
        Assert.ThrowsAny<Exception>(() => new CertificateFiles(CertPath, KeyPath, null, NullLogger.Instance).Select(null, null));

    /// <summary>Writes a new self-signed pair (or only its certificate) and returns its thumbprint.</summary>
    private string Write(string name, bool writeKey = true)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllText(CertPath, certificate.ExportCertificatePem());
        if (writeKey)
        {
            File.WriteAllText(KeyPath, key.ExportPkcs8PrivateKeyPem());
        }

        return certificate.Thumbprint;
    }
}
