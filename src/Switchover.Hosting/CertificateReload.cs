using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Switchover.Hosting;

/// <summary>
/// Kestrel reloads a changed certificate file (or endpoint configuration) by rebinding the endpoint, and the rebind
/// closes every connection of that endpoint: kept-alive clients that send their next request into the closing socket
/// lose it. With Switchover a changed endpoint configuration is the next generation's to apply (a deploy), and a
/// certificate file named by <c>Kestrel:Endpoints:NAME:Certificate</c> is reloaded in place: new TLS handshakes get
/// the new certificate, open connections keep theirs, nothing is rebound. So Kestrel's configuration loader is
/// replaced by the same one without reloading, and each such endpoint gets a certificate selector that follows its files.
/// Other certificate sources (SNI entries, <c>Kestrel:Certificates:Default</c>, the store, certificates set in code)
/// change with the next generation, like any other configuration.
/// </summary>
internal sealed class CertificateReload(SwitchoverConfiguration configuration, ILoggerFactory loggers) : IPostConfigureOptions<KestrelServerOptions>
{
    public void PostConfigure(string? name, KestrelServerOptions kestrel)
    {
        if (!configuration.Enabled || kestrel.ConfigurationLoader is not { } loader)
        {
            return;
        }

        var logger = loggers.CreateLogger<CertificateReload>();
        var section = loader.Configuration;
        var replacement = kestrel.Configure(section, reloadOnChange: false);
        foreach (var endpoint in section.GetSection("Endpoints").GetChildren())
        {
            var certificate = endpoint.GetSection("Certificate");
            if (certificate["Path"] is { } path && endpoint.GetSection("Sni").GetChildren().Any() is false)
            {
                var files = new CertificateFiles(path, certificate["KeyPath"], certificate["Password"], logger);
                replacement.Endpoint(endpoint.Key, e => e.HttpsOptions.ServerCertificateSelector = files.Select);
            }
        }
    }
}

/// <summary>
/// A certificate (PEM with its key, or PKCS#12) that follows its files: looked at again at most once a second, on a
/// handshake. A new pair that does not load (half written, or a key that does not match) is ignored, with a warning,
/// until it does; the last good one is served meanwhile.
/// </summary>
internal sealed class CertificateFiles
{
    private static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(1);

    private readonly string _path;
    private readonly string? _keyPath;
    private readonly string? _password;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private X509Certificate2? _current;
    private (DateTime, long, DateTime, long) _stamp;
    private long _checkedAt = long.MinValue;

    public CertificateFiles(string path, string? keyPath, string? password, ILogger logger)
    {
        _path = path;
        _keyPath = keyPath;
        _password = password;
        _logger = logger;
    }

    /// <summary>Kestrel's <c>ServerCertificateSelector</c>: the certificate now on disk.</summary>
    public X509Certificate2? Select(ConnectionContext? connection, string? serverName)
    {
        var now = Environment.TickCount64;
        lock (_lock)
        {
            if (_current is null || now - _checkedAt >= CheckInterval.TotalMilliseconds)
            {
                _checkedAt = now;
                Refresh();
            }

            return _current;
        }
    }

    private void Refresh()
    {
        var stamp = Stamp();
        if (_current is not null && stamp == _stamp)
        {
            return;
        }

        try
        {
            var loaded = Load();
            var previous = _current;
            _current = loaded;
            _stamp = stamp;
            if (previous is not null)
            {
                Log.CertificateReloaded(_logger, _path, previous.Thumbprint, loaded.Thumbprint);
            }

            // The previous certificate is left to the GC: a handshake that picked it a moment ago may still use it.
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            if (_current is null)
            {
                throw;
            }

            Log.CertificateNotReloaded(_logger, _path, e.Message);
        }
    }

    private X509Certificate2 Load()
    {
        if (_keyPath is not null || Path.GetExtension(_path).Equals(".pem", StringComparison.OrdinalIgnoreCase)
            || Path.GetExtension(_path).Equals(".crt", StringComparison.OrdinalIgnoreCase))
        {
            return _password is null
                ? X509Certificate2.CreateFromPemFile(_path, _keyPath)
                : X509Certificate2.CreateFromEncryptedPemFile(_path, _password, _keyPath);
        }

        return X509CertificateLoader.LoadPkcs12FromFile(_path, _password);
    }

    private (DateTime, long, DateTime, long) Stamp()
    {
        var certificate = new FileInfo(_path);
        var key = _keyPath is null ? null : new FileInfo(_keyPath);
        return (certificate.LastWriteTimeUtc, certificate.Exists ? certificate.Length : -1,
            key?.LastWriteTimeUtc ?? default, key is { Exists: true } ? key.Length : -1);
    }
}
