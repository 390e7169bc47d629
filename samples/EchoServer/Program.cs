var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseSwitchover();
var app = builder.Build();

app.MapGet("/", async (int? delay, IConfiguration config, CancellationToken aborted) =>
{
    if (delay is > 0)
    {
        await Task.Delay(Math.Min(delay.Value, 60_000), aborted);
    }

    return $"{config["Text"] ?? "hello"} {Environment.ProcessId}\n";
});

app.Run();
