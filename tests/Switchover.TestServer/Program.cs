// The echo app of samples/EchoServer with knobs that make a generation misbehave, for the integration tests, and
// that give the load suite its baselines:
//   --FailHealth=true     a registered health check reports Unhealthy (the generation never gets ready)
//   --CrashAfterMs=N      the process kills itself with SIGKILL N ms after the host started
//   --FailAfterMs=N       N ms after the app was built, every request is answered 503 (healthy at takeover, then not)
//   --ReusePort=true      listening sockets are bound with SO_REUSEPORT, so a new process can bind the same port while
//                         the old one still listens (the overlap baseline; use with --Switchover:Mode=Disabled)
//   --Code:UseUrls=U1;U2  the URLs set in code with UseUrls
//   --Code:Listen=S1;S2   endpoints set in code with Listen*(): anyip:PORT, any:PORT, loopback:PORT, localhost:PORT,
//                         ip:ADDRESS:PORT, handle:FD; a suffix ":https" adds UseHttps with --Code:CertPath/--Code:KeyPath (PEM)
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Diagnostics.HealthChecks;

var builder = WebApplication.CreateBuilder(args);
if (builder.Configuration.GetValue<bool>("ReusePort"))
{
    builder.WebHost.UseSockets(options => options.CreateBoundListenSocket = BindWithReusePort);
}

builder.WebHost.UseSwitchover();
if (builder.Configuration["Code:UseUrls"] is { } codeUrls)
{
    builder.WebHost.UseUrls(codeUrls.Split(';'));
}

if (builder.Configuration["Code:Listen"] is { } codeListen)
{
    builder.WebHost.ConfigureKestrel(kestrel =>
    {
        foreach (var spec in codeListen.Split(';'))
        {
            ListenInCode(kestrel, spec, builder.Configuration);
        }
    });
}

builder.Services.AddHealthChecks().AddCheck("knob", () =>
    builder.Configuration.GetValue<bool>("FailHealth")
        ? HealthCheckResult.Unhealthy("FailHealth is set")
        : HealthCheckResult.Healthy());
var app = builder.Build();

var failFrom = app.Configuration.GetValue<int?>("FailAfterMs") is { } failAfter ? Environment.TickCount64 + failAfter : long.MaxValue;
app.Use((context, next) =>
{
    if (Environment.TickCount64 < failFrom)
    {
        return next(context);
    }

    context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
    return Task.CompletedTask;
});

app.MapGet("/", async (int? delay, IConfiguration config, CancellationToken aborted) =>
{
    if (delay is > 0)
    {
        await Task.Delay(Math.Min(delay.Value, 60_000), aborted);
    }

    return $"{config["Text"] ?? "hello"} {Environment.ProcessId}\n";
});

if (app.Configuration.GetValue<int?>("CrashAfterMs") is { } crashAfter)
{
    app.Lifetime.ApplicationStarted.Register(() => _ = Task.Delay(crashAfter).ContinueWith(
        _ => Process.GetCurrentProcess().Kill(), TaskScheduler.Default));
}

app.Run();

// Kestrel's default listen socket, plus SO_REUSEPORT set before bind (it has to be: the kernel checks it at bind).
static Socket BindWithReusePort(EndPoint endpoint)
{
    if (endpoint is not IPEndPoint ip)
    {
        return SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
    }

    var socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
    try
    {
        if (ip.Address.Equals(IPAddress.IPv6Any))
        {
            socket.DualMode = true;
        }

        const int SolSocket = 1, SoReusePort = 15; // <asm-generic/socket.h>, the same on every Linux architecture .NET runs on
        socket.SetRawSocketOption(SolSocket, SoReusePort, BitConverter.GetBytes(1));
        socket.Bind(ip);
        return socket;
    }
    catch
    {
        socket.Dispose();
        throw;
    }
}

// One Listen*() call as an app would write it, from "KIND:...[:https]".
static void ListenInCode(Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions kestrel, string spec, IConfiguration configuration)
{
    var https = spec.EndsWith(":https", StringComparison.Ordinal);
    var parts = (https ? spec[..^":https".Length] : spec).Split(':', 2);
    Action<Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions> configure = https
        ? listen => listen.UseHttps(System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(
            configuration["Code:CertPath"]!, configuration["Code:KeyPath"]))
        : _ => { };
    int Port(string text) => int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
    switch (parts[0])
    {
        case "anyip":
            kestrel.ListenAnyIP(Port(parts[1]), configure);
            break;
        case "any":
            kestrel.Listen(IPAddress.Any, Port(parts[1]), configure);
            break;
        case "loopback":
            kestrel.Listen(IPAddress.Loopback, Port(parts[1]), configure);
            break;
        case "localhost":
            kestrel.ListenLocalhost(Port(parts[1]), configure);
            break;
        case "ip":
            var colon = parts[1].LastIndexOf(':');
            kestrel.Listen(IPAddress.Parse(parts[1][..colon].Trim('[', ']')), Port(parts[1][(colon + 1)..]), configure);
            break;
        case "handle":
            kestrel.ListenHandle(ulong.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture), configure);
            break;
        default:
            throw new ArgumentException($"Unknown --Code:Listen kind '{parts[0]}' in '{spec}'.");
    }
}
