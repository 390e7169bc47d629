using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using Switchover.Migration.Gre;

namespace Switchover.Cli;

/// <summary>
/// <c>switchover tunnel run|status|stop</c>: a GRE tunnel hosted by a foreground agent (for systemd), and its local
/// control socket.
/// </summary>
internal static class TunnelCommand
{
    public static Command Create()
    {
        var tunnel = new Command("tunnel",
            "Run a GRE tunnel to another host (kernel GRE where the kernel has it, else in userspace: a TUN device and a raw " +
            "GRE socket served by this process), and query or stop it through its local control socket.")
        {
            CreateRun(),
            CreateStatus(),
            CreateStop(),
        };
        return tunnel;
    }

    private static Command CreateRun()
    {
        var name = NameOption("The tunnel interface to create, e.g. gre0 (1 to 15 characters of [A-Za-z0-9_.-]).", required: true);
        var local = AddressOption("--local", "This host's outer address: GRE is sent from it and received on it.");
        var remote = AddressOption("--remote", "The other host's outer address. GRE from any other source is dropped and counted.");
        var key = NumberOption("--key", "KEY",
            "The GRE key, decimal or 0x-hex. Sent in every packet and required in every packet received; the other end must use the same. " +
            "Default: no key.");
        var mtu = new Option<int?>("--mtu")
        {
            Description = "The tunnel MTU. Default: 1500 minus the overhead (1472 for IPv4 outer with a key, 1452 for IPv6 outer with a key).",
            HelpName = "BYTES",
        };
        var mark = NumberOption("--mark", "MARK", "Firewall mark of the outer GRE packets (SO_MARK, or fwmark of a kernel link), decimal or 0x-hex.");
        var ttl = new Option<int>("--ttl") { Description = "TTL or hop limit of the outer packets.", HelpName = "TTL", DefaultValueFactory = _ => 64 };
        var checksum = new Option<bool>("--checksum") { Description = "Send GRE checksums (received ones are always verified)." };
        var sequence = new Option<bool>("--sequence") { Description = "Send GRE sequence numbers (received ones are ignored)." };
        var dataplane = new Option<string>("--dataplane")
        {
            Description = "auto: the kernel's GRE when it has it for this outer family (and FOU, for --encapsulation udp), else userspace.",
            HelpName = "auto|kernel|userspace",
            DefaultValueFactory = _ => "auto",
        };
        dataplane.AcceptOnlyFromAmong("auto", "kernel", "userspace");
        var encapsulation = CommonOptions.Encapsulation();
        var socket = SocketOption();
        var command = new Command("run",
            "Create the tunnel and serve it in the foreground until SIGTERM, SIGINT or 'switchover tunnel stop'; then remove it. " +
            "Control socket: /run/switchover/tunnel-NAME.sock (mode 0600; root and this process's user only). With NOTIFY_SOCKET " +
            "set it reports READY=1 to systemd (Type=notify). Exit codes: 0 stopped as asked, 1 the tunnel could not start or failed, " +
            "2 bad command line.")
        {
            name, local, remote, key, mtu, mark, ttl, checksum, sequence, dataplane, encapsulation, socket,
        };

        command.SetAction(async (parseResult, cancellationToken) =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            var options = new TunnelOptions
            {
                Name = parseResult.GetValue(name)!,
                Local = parseResult.GetValue(local)!,
                Remote = parseResult.GetValue(remote)!,
                Key = parseResult.GetValue(key),
                Mtu = parseResult.GetValue(mtu),
                FirewallMark = parseResult.GetValue(mark),
                Ttl = parseResult.GetValue(ttl),
                SendChecksum = parseResult.GetValue(checksum),
                SendSequenceNumbers = parseResult.GetValue(sequence),
                Encapsulation = parseResult.GetValue(encapsulation),
            };
            var problems = options.Validate();
            if (problems.Count > 0)
            {
                await error.WriteLineAsync("switchover: " + string.Join(" ", problems) + " See 'switchover tunnel run --help'.").ConfigureAwait(false);
                return ExitCodes.Usage;
            }

            return await RunAsync(options, parseResult.GetValue(dataplane)!, SocketPath(parseResult, socket, options.Name), output, error, cancellationToken)
                .ConfigureAwait(false);
        });
        return command;
    }

    private static Command CreateStatus()
    {
        var name = NameOption("The tunnel whose agent to ask.", required: false);
        var socket = SocketOption();
        var json = new Option<bool>("--json") { Description = "Print the agent's status as one JSON document (camelCase)." };
        var command = new Command("status",
            "Show a tunnel agent's tunnels and their counters (packets, bytes, errors; stray, wrong-key and malformed GRE dropped). " +
            "Exit codes: 0 the agent answered, 1 no agent answered or it refused, 2 bad command line.")
        {
            name, socket, json,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            if (RequireTarget(parseResult, name, socket) is { } usage)
            {
                await parseResult.InvocationConfiguration.Error.WriteLineAsync(usage).ConfigureAwait(false);
                return ExitCodes.Usage;
            }

            var path = SocketPath(parseResult, socket, parseResult.GetValue(name)!);
            TunnelAgentStatus status;
            try
            {
                status = await TunnelAgentClient.GetStatusAsync(path, cancellationToken).ConfigureAwait(false);
            }
            catch (TunnelException e)
            {
                await parseResult.InvocationConfiguration.Error.WriteLineAsync("switchover: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
                return ExitCodes.Failure;
            }

            var output = parseResult.InvocationConfiguration.Output;
            await output.WriteAsync(parseResult.GetValue(json) ? TunnelAgentProtocol.Serialize(status) + "\n" : Render(status)).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command CreateStop()
    {
        var name = NameOption("The tunnel whose agent to stop.", required: false);
        var socket = SocketOption();
        var command = new Command("stop",
            "Ask a tunnel agent to remove its tunnels and exit (as SIGTERM does). Exit codes: 0 the agent is stopping, 1 no agent " +
            "answered or it refused, 2 bad command line.")
        {
            name, socket,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            if (RequireTarget(parseResult, name, socket) is { } usage)
            {
                await parseResult.InvocationConfiguration.Error.WriteLineAsync(usage).ConfigureAwait(false);
                return ExitCodes.Usage;
            }

            var path = SocketPath(parseResult, socket, parseResult.GetValue(name)!);
            try
            {
                await TunnelAgentClient.StopAsync(path, cancellationToken).ConfigureAwait(false);
            }
            catch (TunnelException e)
            {
                await parseResult.InvocationConfiguration.Error.WriteLineAsync("switchover: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
                return ExitCodes.Failure;
            }

            await parseResult.InvocationConfiguration.Output.WriteLineAsync($"the agent at {path} is stopping").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    private static async Task<int> RunAsync(TunnelOptions options, string dataplaneChoice, string socketPath, TextWriter output, TextWriter error,
        CancellationToken cancellationToken)
    {
        // Checked by hand: System.CommandLine's own handling lets the runtime exit on SIGTERM (status 143) before the
        // tunnel and the socket file are removed. Cancelling the signal keeps the process alive until cleanup is done.
        using var signalled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        cancellationToken = signalled.Token;

        GreDataplaneKind kind;
        if (dataplaneChoice == "auto")
        {
            var support = await GreSupport.DetectAsync(cancellationToken).ConfigureAwait(false);
            kind = support.DataplaneFor(options.OuterFamily, options.Encapsulation);
            await error.WriteLineAsync($"switchover tunnel: kernel GRE probe: {support.Detail}; using the {Lower(kind)} dataplane").ConfigureAwait(false);
        }
        else
        {
            kind = dataplaneChoice == "kernel" ? GreDataplaneKind.Kernel : GreDataplaneKind.Userspace;
        }

        TunnelAgent agent;
        try
        {
            agent = await TunnelAgent.StartAsync([TunnelDataplane.Create(options, kind)], socketPath, error, cancellationToken).ConfigureAwait(false);
        }
        catch (TunnelException e)
        {
            await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
            return ExitCodes.Failure;
        }

        await output.WriteLineAsync($"tunnel {options.Name} up ({Lower(kind)} {Describe(options.Encapsulation)} {options.Local} -> {options.Remote}, mtu {options.EffectiveMtu}); " +
            $"control socket {socketPath}; stop with SIGTERM or 'switchover tunnel stop --socket {socketPath}'").ConfigureAwait(false);
        await output.FlushAsync(CancellationToken.None).ConfigureAwait(false);
        var exitCode = ExitCodes.Success;
        try
        {
            var reason = await agent.Stopped.WaitAsync(cancellationToken).ConfigureAwait(false);
            await error.WriteLineAsync($"switchover tunnel: {reason}; removing tunnel {options.Name}").ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await error.WriteLineAsync($"switchover tunnel: terminated by a signal; removing tunnel {options.Name}").ConfigureAwait(false);
        }
        catch (TunnelException e)
        {
            await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
            exitCode = ExitCodes.Failure;
        }
        finally
        {
            await agent.DisposeAsync().ConfigureAwait(false);
        }

        return exitCode;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            signalled.Cancel();
        }
    }

    private static string Render(TunnelAgentStatus status)
    {
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.AppendLine(c, $"agent pid {status.Pid}, uid {status.Uid}");
        foreach (var t in status.Tunnels)
        {
            text.Append(c, $"{t.Name}  {Lower(t.Dataplane)}  {Describe(t.Encapsulation)}  {t.Local} -> {t.Remote}  key {(t.Key is { } k ? k.ToString(c) : "none")}  mtu {t.Mtu}");
            text.Append(t.FirewallMark is { } m ? string.Create(c, $"  mark 0x{m:x}") : "");
            text.Append(t.NetworkNamespace is { } ns ? $"  namespace {ns}" : "");
            text.AppendLine(c, $"  {t.State}");
            var n = t.Counters;
            text.AppendLine(c, $"  tx  packets {n.TxPackets}  bytes {n.TxBytes}  errors {n.TxErrors} (too big {n.TxTooBig})  not IP {n.TxDropped}  refused {n.TxRefused}");
            text.AppendLine(c, $"  rx  packets {n.RxPackets}  bytes {n.RxBytes}  errors {n.RxErrors}  dropped: stray {n.RxStray}, wrong key {n.RxWrongKey}, malformed {n.RxMalformed}");
        }

        return text.ToString();
    }

    private static string Describe(TunnelEncapsulation encapsulation) =>
        encapsulation == TunnelEncapsulation.GreInUdp ? $"GRE in UDP (port {TunnelOptions.GreInUdpPort})" : "GRE";

    private static string Lower(GreDataplaneKind kind) => kind == GreDataplaneKind.Kernel ? "kernel" : "userspace";

    private static Option<string> NameOption(string description, bool required) => new("--name")
    {
        Description = description,
        HelpName = "NAME",
        Required = required,
    };

    private static Option<string> SocketOption() => new("--socket")
    {
        Description = "The agent's control socket. Default: /run/switchover/tunnel-NAME.sock.",
        HelpName = "PATH",
    };

    private static string? RequireTarget(ParseResult parseResult, Option<string> name, Option<string> socket) =>
        parseResult.GetValue(name) is null && parseResult.GetValue(socket) is null
            ? $"switchover: give --name or --socket. See 'switchover tunnel {parseResult.CommandResult.Command.Name} --help'."
            : null;

    private static string SocketPath(ParseResult parseResult, Option<string> socket, string name) =>
        parseResult.GetValue(socket) ?? TunnelAgent.DefaultSocketPath(name);

    private static Option<IPAddress> AddressOption(string option, string description) => new(option)
    {
        Description = description,
        HelpName = "ADDRESS",
        Required = true,
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
            if (IPAddress.TryParse(text, out var address))
            {
                return address;
            }

            result.AddError($"{option} '{text}' is not an IPv4 or IPv6 address.");
            return null;
        },
    };

    private static Option<uint?> NumberOption(string option, string helpName, string description) => new(option)
    {
        Description = description,
        HelpName = helpName,
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
            var ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                ? uint.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value)
                : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
            if (ok)
            {
                return value;
            }

            result.AddError($"{option} '{text}' is not a number from 0 to 4294967295 (decimal, or hex with 0x).");
            return null;
        },
    };
}
