using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Switchover.Hosting;

/// <summary>Turns the app's endpoint configuration into the public endpoints Switchover redirects.</summary>
internal static class PublicEndpointResolver
{
    public const int KestrelDefaultPort = 5000;

    /// <summary>Resolves the public endpoints; collects every error rather than stopping at the first.</summary>
    public static IReadOnlyList<PublicEndpoint> Resolve(IEnumerable<string> explicitEndpoints, IConfiguration configuration, List<string> errors)
    {
        var endpoints = new List<PublicEndpoint>();
        var explicitList = explicitEndpoints.ToList();
        if (explicitList.Count > 0)
        {
            foreach (var text in explicitList)
            {
                try
                {
                    endpoints.Add(PublicEndpoint.Parse(text));
                }
                catch (FormatException e)
                {
                    errors.Add("Switchover:PublicEndpoints: " + e.Message);
                }
            }
        }
        else
        {
            var urls = configuration["urls"];
            var kestrelUrls = configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"]).OfType<string>().ToList();
            var all = kestrelUrls.Count > 0
                ? kestrelUrls
                : (urls ?? string.Empty).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
            if (all.Count == 0)
            {
                all.Add($"http://localhost:{KestrelDefaultPort}");
            }

            foreach (var url in all)
            {
                var endpoint = FromUrl(url, errors);
                if (endpoint is not null)
                {
                    endpoints.Add(endpoint);
                }
            }
        }

        foreach (var duplicate in endpoints.GroupBy(e => e.Port).Where(g => g.Count() > 1))
        {
            errors.Add($"Public port {duplicate.Key} is configured {duplicate.Count()} times; give each endpoint its own port.");
        }

        return endpoints.DistinctBy(e => e.Port).ToList();
    }

    /// <summary>Parses an ASP.NET Core URL (http://host:port, with host also '*' or '+'). The host is not used: every local address is redirected.</summary>
    internal static PublicEndpoint? FromUrl(string url, List<string> errors)
    {
        var schemeEnd = url.IndexOf("://", StringComparison.Ordinal);
        var scheme = schemeEnd < 0 ? string.Empty : url[..schemeEnd].ToLowerInvariant();
        if (scheme != "http")
        {
            errors.Add(scheme == "https"
                ? $"Endpoint '{url}': HTTPS endpoints are not supported by Switchover yet. Terminate TLS in front of the app, or set Switchover:Mode=Disabled."
                : $"Endpoint '{url}' is not an http:// URL. Write it as http://HOST:PORT, e.g. http://0.0.0.0:8080.");
            return null;
        }

        var authority = url[(schemeEnd + 3)..];
        var slash = authority.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            authority = authority[..slash];
        }

        var colon = authority.LastIndexOf(':');
        if (colon < 0 || colon < authority.LastIndexOf(']'))
        {
            return new PublicEndpoint(80);
        }

        var portText = authority[(colon + 1)..];
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            errors.Add($"Endpoint '{url}': port '{portText}' is out of range. Use a port in 1-65535 (0 is chosen by Switchover for the private port).");
            return null;
        }

        return new PublicEndpoint(port);
    }
}
