// The echo app of samples/EchoServer with knobs that make a generation misbehave, for the integration tests:
//   --FailHealth=true     a registered health check reports Unhealthy (the generation never gets ready)
//   --CrashAfterMs=N      the process kills itself with SIGKILL N ms after the host started
using System.Diagnostics;
using Microsoft.Extensions.Diagnostics.HealthChecks;

var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseSwitchover();
builder.Services.AddHealthChecks().AddCheck("knob", () =>
    builder.Configuration.GetValue<bool>("FailHealth")
        ? HealthCheckResult.Unhealthy("FailHealth is set")
        : HealthCheckResult.Healthy());
var app = builder.Build();

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
