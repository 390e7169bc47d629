// A line-oriented TCP server in the spirit of SMTP, on Kestrel connection handlers, handed over with Switchover.
// Start: dotnet GreetingServer.dll --urls http://*:25 --Text=new-host
using Microsoft.AspNetCore.Connections;
using Switchover.Hosting;
using Switchover.Samples;

var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseSwitchover(options => options.ReadinessProbe = ReadinessProbe.Tcp);
builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.UseConnectionHandler<GreetingHandler>()));
builder.Build().Run();
