using System.Diagnostics;

namespace Switchover.IntegrationTests;

/// <summary>A self-signed certificate and key (PEM) made with openssl for the test, in a directory deleted with it.</summary>
public sealed class TestCertificate : IDisposable
{
    private TestCertificate(string directory)
    {
        Directory = directory;
    }

    public string Directory { get; }

    public string CertPath => Path.Combine(Directory, "cert.pem");

    public string KeyPath => Path.Combine(Directory, "key.pem");

    /// <summary>The SHA-1 thumbprint of the certificate now on disk, as X509Certificate.GetCertHashString gives it.</summary>
    public string Thumbprint
    {
        get
        {
            using var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(CertPath));
            return certificate.GetCertHashString();
        }
    }

    /// <summary>An EC P-256 certificate for localhost and the lab's server addresses, valid for a day.</summary>
    public static async Task<TestCertificate> CreateAsync(CancellationToken cancellationToken, string commonName = "switchover-test")
    {
        var certificate = new TestCertificate(System.IO.Directory.CreateTempSubdirectory("switchover-cert-").FullName);
        try
        {
            await certificate.RenewAsync(commonName, cancellationToken);
            return certificate;
        }
        catch
        {
            certificate.Dispose();
            throw;
        }
    }

    /// <summary>Writes a new key and certificate over the old files (what a certificate renewal does on disk).</summary>
    public async Task RenewAsync(string commonName, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("openssl")
        {
            ArgumentList =
            {
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", "/CN=" + commonName, "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:192.0.2.1,IP:2001:db8::1",
                "-keyout", KeyPath + ".new", "-out", CertPath + ".new",
            },
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        using var process = Process.Start(start) ?? throw new InvalidOperationException("openssl did not start.");
        var error = await process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"openssl req exited {process.ExitCode}: {error}");
        }

        File.Move(KeyPath + ".new", KeyPath, overwrite: true);
        File.Move(CertPath + ".new", CertPath, overwrite: true);
    }

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);
}
