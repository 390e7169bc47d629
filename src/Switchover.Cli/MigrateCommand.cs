using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Switchover.Migration.Model;
using Switchover.Migration.Plan;
using Switchover.Migration.Remote;
using Switchover.Netfilter;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>
/// <c>switchover migrate</c>: move IP:port tuples from an old host to a new one over GRE. Each command says what it
/// changes; <c>--dry-run</c> prints the plan and changes nothing.
/// </summary>
internal static class MigrateCommand
{
    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "done (or, with --dry-run, planned)"),
        (ExitCodes.Failure, "refused or failed; every problem is listed and nothing was changed (a failed setup is undone)"),
        (ExitCodes.Usage, "the command line is wrong; nothing was touched"),
    ]);

    public static Command Create()
    {
        var command = new Command("migrate", "Move IP:port services from an old host to a new one over GRE, one tuple at a time, while both run.")
        {
            Setup(), Move(move: true), Move(move: false), Status(), Teardown(), Finalize(),
        };
        return command;
    }

    private static Option<NamespaceName> Name() => new("--name")
    {
        Description = "The migration's name on this host ([a-z0-9_-]).",
        HelpName = "NAME",
        Required = true,
        CustomParser = CommonOptions.ParseNamespace,
    };

    private static Option<bool> DryRun() => new("--dry-run") { Description = "Print the plan; change nothing." };

    private static Option<string> StateDir() => CommonOptions.StateDirectory();

    private static Option<bool> Json() => new("--json")
    {
        Description = "Print the outcome as one JSON document on standard output, also on failure (what a host driving this one over SSH reads).",
    };

    /// <summary>The options that name the peer a setup drives over SSH; later commands read them from the journal.</summary>
    private sealed class PeerOptions
    {
        public Option<string> Peer { get; } = new("--peer")
        {
            Description = "Drive the other host too, over SSH: ssh://[user@]host[:port]. It is set up as the other side of this tunnel, and later " +
                "commands here (move, return, status, teardown, finalize) reach it again without these options. With --peer, --tuple names " +
                "the tuples the new host serves; the old host moves them with 'move'.",
            HelpName = "URI",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[0].Value : string.Empty;
                if (PeerAddress.TryParse(text, out _) is { } error)
                {
                    r.AddError(error);
                }

                return text;
            },
        };

        public Option<string> Key { get; } = new("--ssh-key") { Description = "--peer: the private key ssh authenticates with (ssh -i, IdentitiesOnly). Required with --peer.", HelpName = "PATH" };

        public Option<string> KnownHosts { get; } = new("--ssh-known-hosts")
        {
            Description = "--peer: the known_hosts file that must already hold the peer's host key (strict checking). Default: ~/.ssh/known_hosts.",
            HelpName = "PATH",
        };

        public Option<string> Command { get; } = new("--peer-command")
        {
            Description = "--peer: how to start switchover on the peer, as shell text for its shell (e.g. \"dotnet /opt/switchover/switchover.dll\").",
            HelpName = "CMD",
            DefaultValueFactory = _ => PeerConnection.DefaultCommand,
        };

        public Option<string> StateDir { get; } = new("--peer-state-dir") { Description = "--peer: the peer's --state-dir. Default: its own default.", HelpName = "DIR" };

        public Option<TimeSpan> Timeout { get; } = new("--peer-timeout")
        {
            Description = "--peer: the bound on each call to the peer (connect, run, answer); a move --wait adds its wait.",
            HelpName = "DURATION",
            DefaultValueFactory = _ => PeerConnection.DefaultTimeout,
            CustomParser = CommonOptions.ParseDuration,
        };

        public IEnumerable<Option> All => [Peer, Key, KnownHosts, Command, StateDir, Timeout];

        public PeerConnection? Read(ParseResult p)
        {
            if (p.GetValue(Peer) is not { Length: > 0 } uri)
            {
                return null;
            }

            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return new PeerConnection(uri, Path.GetFullPath(p.GetValue(Key)!), Path.GetFullPath(p.GetValue(KnownHosts) ?? Path.Combine(home, ".ssh", "known_hosts")),
                p.GetValue(Command)!, p.GetValue(StateDir), p.GetValue(Timeout));
        }

        public void Validate(System.CommandLine.Parsing.CommandResult r)
        {
            var peer = r.GetValue(Peer);
            if (peer is { Length: > 0 } && r.GetValue(Key) is not { Length: > 0 })
            {
                r.AddError("--peer needs --ssh-key PATH: the key ssh authenticates with (batch mode, no password).");
            }

            foreach (var option in new Option[] { Key, KnownHosts, StateDir })
            {
                if (peer is not { Length: > 0 } && r.GetResult(option) is { Implicit: false })
                {
                    r.AddError($"{option.Name} is only for --peer.");
                }
            }
        }
    }

    private static Command Setup()
    {
        var name = Name();
        var side = new Option<MigrationSide>("--side") { Description = "old: the host that holds the IP; new: the host that takes the services over.", Required = true };
        var tunnel = new Option<string>("--tunnel") { Description = "The tunnel device name.", HelpName = "DEV", DefaultValueFactory = _ => "gre-sw" };
        var local = new Option<IPAddress>("--local") { Description = "This host's tunnel (outer) address.", Required = true, CustomParser = ParseAddress };
        var remote = new Option<IPAddress>("--remote") { Description = "The other host's tunnel (outer) address.", Required = true, CustomParser = ParseAddress };
        var key = new Option<uint?>("--key") { Description = "The GRE key (RFC 2890), the same on both hosts. Required." };
        var mtu = new Option<int>("--mtu") { Description = "Tunnel MTU.", DefaultValueFactory = _ => MigrationSpec.DefaultMtu };
        var mark = new Option<uint?>("--mark")
        {
            Description = "fwmark/connmark of moved flows. Default: the first free one on this host from 0x2f up, in step with --table.",
            CustomParser = ParseMark,
        };
        var table = new Option<int?>("--table")
        {
            Description = "Routing table for the tunnel (1-252). Default: the first free one on this host from 47 up.",
            CustomParser = result =>
            {
                var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
                if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value is < 1 or > 252)
                {
                    result.AddError($"--table '{text}' must be a number 1-252 (253-255 are the kernel's default, main and local).");
                }

                return value;
            },
        };
        var linkNetwork = new Option<IPAddress>("--link-network")
        {
            Description = "The IPv4 /30 for the tunnel's two link addresses (.1 old, .2 new), the same on both hosts. Default: derived from --key.",
            HelpName = "ADDRESS",
            CustomParser = ParseAddress,
        };
        var tuples = new Option<SteeredTuple[]>("--tuple")
        {
            Description = "A moved tuple, tcp/IP:PORT or udp/IP:PORT (repeat). On the new host: the tuples it will serve (their addresses are added to lo).",
            AllowMultipleArgumentsPerToken = true,
            CustomParser = ParseTuples,
        };
        var encapsulation = CommonOptions.Encapsulation();
        var kernel = new Option<bool>("--kernel-gre") { Description = "Create a kernel GRE device even if detection says the kernel has none. Default: when the device does not exist, a kernel GRE device is created where the kernel supports it; otherwise start the userspace tunnel first (switchover tunnel run)." };
        var dryRun = DryRun();
        var stateDir = StateDir();
        var json = Json();
        var peer = new PeerOptions();
        var command = new Command("setup", "Set up this host's side: sysctls, addresses, policy routing, the steering table. Idempotent. With --peer, the other host's side too, over SSH.")
        {
            name, side, tunnel, local, remote, key, mtu, mark, table, linkNetwork, tuples, encapsulation, kernel, dryRun, stateDir, json,
        };
        foreach (var option in peer.All)
        {
            command.Options.Add(option);
        }

        command.Validators.Add(peer.Validate);
        command.SetAction((p, ct) => RunAsync(p, async (host, peers) =>
        {
            var spec = new MigrationSpec(p.GetValue(name)!, p.GetValue(side), p.GetValue(tunnel)!, p.GetValue(local)!, p.GetValue(remote)!,
                p.GetValue(key), p.GetValue(mtu), p.GetValue(mark) ?? MigrationSpec.PickFree, p.GetValue(table) ?? MigrationSpec.PickFree, p.GetValue(tuples) ?? [],
                p.GetValue(linkNetwork))
            {
                ControlClient = MigrationSpec.ParseSshConnection(Environment.GetEnvironmentVariable("SSH_CONNECTION")),
                Encapsulation = p.GetValue(encapsulation),
            };
            return peer.Read(p) is { } connection
                ? Done.Of(await peers.SetupAsync(spec, p.GetValue(kernel), p.GetValue(dryRun), connection, ct).ConfigureAwait(false))
                : new Done(await host.SetupAsync(spec, p.GetValue(kernel), p.GetValue(dryRun), ct).ConfigureAwait(false));
        }, stateDir, json));
        return command;
    }

    private static Command Move(bool move)
    {
        var name = Name();
        var tuple = new Argument<SteeredTuple>("tuple") { Description = "tcp/IP:PORT or udp/IP:PORT", CustomParser = r => ParseTuple(r, r.Tokens.Count > 0 ? r.Tokens[0].Value : string.Empty) };
        var dryRun = DryRun();
        var stateDir = StateDir();
        var check = new Option<MoveCheck>("--check")
        {
            Description = "move: what the new host must answer on the tuple through the tunnel before any new flow goes there: tcp (a connection is " +
                "accepted), http:/PATH (GET answers 2xx/3xx) or none (the only choice for UDP).",
            HelpName = "CHECK",
            DefaultValueFactory = _ => MoveCheck.Tcp,
            CustomParser = r =>
            {
                try
                {
                    return MoveCheck.Parse(r.Tokens.Count > 0 ? r.Tokens[0].Value : string.Empty);
                }
                catch (FormatException e)
                {
                    r.AddError(e.Message);
                    return null;
                }
            },
        };
        var wait = new Option<TimeSpan>("--wait")
        {
            Description = "move: keep checking for this long (e.g. 30s, 5m) before refusing. Default: check once.",
            HelpName = "DURATION",
            CustomParser = CommonOptions.ParseDuration,
        };
        var json = Json();
        var command = new Command(move ? "move" : "return", move
            ? "On the old host: send the tuple's new flows to the new host. Flows already open stay here. On a new host set up with --peer: on the old host, over SSH."
            : "On the old host: keep the tuple's new flows here again (rollback). Flows already moved finish on the new host. On a new host set up with --peer: on the old host, over SSH.")
        {
            name, tuple, dryRun, stateDir, json,
        };
        if (move)
        {
            command.Options.Add(check);
            command.Options.Add(wait);
        }

        command.SetAction((p, ct) => RunAsync(p, async (host, peers) =>
        {
            var journal = await host.ReadAsync(p.GetValue(name)!, ct).ConfigureAwait(false);
            if (journal is { Side: MigrationSide.New, Peer: not null })
            {
                return Done.Of(await peers.SteerAsync(p.GetValue(name)!, p.GetValue(tuple)!, move, p.GetValue(dryRun), p.GetValue(check)!, p.GetValue(wait), ct)
                    .ConfigureAwait(false));
            }

            return new Done(await (move
                ? host.MoveAsync(p.GetValue(name)!, p.GetValue(tuple)!, p.GetValue(dryRun), p.GetValue(check)!, p.GetValue(wait), ct)
                : host.ReturnAsync(p.GetValue(name)!, p.GetValue(tuple)!, p.GetValue(dryRun), ct)).ConfigureAwait(false));
        }, stateDir, json));
        return command;
    }

    private static Command Teardown()
    {
        var name = Name();
        var dryRun = DryRun();
        var stateDir = StateDir();
        var json = Json();
        var localOnly = new Option<bool>("--local-only") { Description = "Set up with --peer: tear down only this host's side (e.g. when the peer is gone)." };
        var command = new Command("teardown", "Undo everything the migration changed on this host, exactly, in reverse order. Set up with --peer: the peer's side first, over SSH.")
        {
            name, dryRun, localOnly, stateDir, json,
        };
        command.SetAction((p, ct) => RunAsync(p, async (host, peers) =>
            !p.GetValue(localOnly) && await peers.RecordedPeerAsync(p.GetValue(name)!, ct).ConfigureAwait(false) is not null
                ? Done.Of(await peers.TeardownAsync(p.GetValue(name)!, p.GetValue(dryRun), ct).ConfigureAwait(false))
                : new Done(await host.TeardownAsync(p.GetValue(name)!, p.GetValue(dryRun), ct).ConfigureAwait(false)), stateDir, json));
        return command;
    }

    private static Command Finalize()
    {
        var name = Name();
        var dryRun = DryRun();
        var force = new Option<bool>("--force") { Description = "Finalize even though no packet has arrived directly yet." };
        var watch = new Option<bool>("--watch") { Description = "Wait until the provider routes the moved IPs here (see --direct-packets, --quiet), then finalize." };
        var directPackets = new Option<long>("--direct-packets")
        {
            Description = "--watch: packets for the moved addresses that must have arrived directly.",
            DefaultValueFactory = _ => 5,
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[0].Value : string.Empty;
                if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value < 1)
                {
                    r.AddError($"--direct-packets '{text}' must be a whole number of at least 1.");
                }

                return value;
            },
        };
        var quiet = new Option<TimeSpan>("--quiet")
        {
            Description = "--watch: how long no packet may have come through the tunnel.",
            HelpName = "DURATION",
            DefaultValueFactory = _ => TimeSpan.FromSeconds(5),
            CustomParser = CommonOptions.ParseDuration,
        };
        var timeout = new Option<TimeSpan>("--timeout")
        {
            Description = "--watch: give up (and change nothing) after this long.",
            HelpName = "DURATION",
            DefaultValueFactory = _ => TimeSpan.FromHours(1),
            CustomParser = CommonOptions.ParseDuration,
        };
        var stateDir = StateDir();
        var json = Json();
        var command = new Command("finalize", "On the new host, once the provider routes the moved IPs to it: serve them directly and retire the tunnel's part. " +
            "Set up with --peer: then tear down the old host's side over SSH (or, run on the old host, finalize the new one over SSH, then tear down here).")
        {
            name, force, watch, directPackets, quiet, timeout, dryRun, stateDir, json,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(watch) && r.GetValue(force))
            {
                r.AddError("--watch and --force contradict each other: --force finalizes now, --watch waits for the route.");
            }
        });
        command.SetAction((p, ct) => RunAsync(p, async (host, peers) =>
        {
            var finalizeName = p.GetValue(name)!;
            var finalizeWatch = new FinalizeWatch(p.GetValue(directPackets), p.GetValue(quiet), p.GetValue(timeout));
            Func<MigrationHost, bool, Task<MigrationOutcome>> here = (h, dry) => p.GetValue(watch)
                ? h.FinalizeWhenRoutedHereAsync(finalizeName, finalizeWatch, dry, ct)
                : h.FinalizeAsync(finalizeName, p.GetValue(force), dry, ct);
            if (await peers.RecordedPeerAsync(finalizeName, ct).ConfigureAwait(false) is null)
            {
                return new Done(await here(host, p.GetValue(dryRun)).ConfigureAwait(false));
            }

            // The same options for the peer's finalize, when the peer is the new host.
            List<string> forward = p.GetValue(watch)
                ? ["--watch", "--direct-packets", p.GetValue(directPackets).ToString(CultureInfo.InvariantCulture), "--quiet", Seconds(p.GetValue(quiet)), "--timeout", Seconds(p.GetValue(timeout))]
                : p.GetValue(force) ? ["--force"] : [];
            // Here: the check (or the watch) as a dry run first; the real finalize once the old host's teardown has run.
            return Done.Of(await peers.FinalizeAsync(finalizeName, h => here(h, true), h => h.FinalizeAsync(finalizeName, force: true, dryRun: false, ct), forward,
                p.GetValue(watch) ? p.GetValue(timeout) : TimeSpan.Zero, p.GetValue(dryRun), ct).ConfigureAwait(false));
        }, stateDir, json));
        return command;
    }

    private static Command Status()
    {
        var name = Name();
        var json = new Option<bool>("--json") { Description = "Print JSON." };
        var tunnelSocket = new Option<string>("--tunnel-socket")
        {
            Description = "The userspace tunnel agent's control socket, for its counters. Default: /run/switchover/tunnel-DEV.sock.",
            HelpName = "PATH",
        };
        var stateDir = StateDir();
        var command = new Command("status", "Tuples, flows per tuple (through the tunnel / still here), tunnel counters, and what needs attention.")
        {
            name, json, tunnelSocket, stateDir,
        };
        command.SetAction(async (p, ct) =>
        {
            var output = p.InvocationConfiguration.Output;
            var error = p.InvocationConfiguration.Error;
            var host = MigrationHost.Create(p.GetValue(stateDir)!);
            var status = await host.StatusAsync(p.GetValue(name)!, p.GetValue(tunnelSocket), ct).ConfigureAwait(false);
            if (status is null)
            {
                await error.WriteLineAsync($"switchover: migration '{p.GetValue(name)}' is not set up on this host.").ConfigureAwait(false);
                return ExitCodes.Failure;
            }

            var peer = (await host.ReadAsync(p.GetValue(name)!, ct).ConfigureAwait(false))?.Peer;
            var here = p.GetValue(json) ? JsonSerializer.Serialize(status, StatusJsonContext.Default.MigrationStatus) : Render(status);
            if (peer is null)
            {
                await output.WriteLineAsync(here).ConfigureAwait(false);
                return ExitCodes.Success;
            }

            // Both sides: the peer's own status, asked over SSH (its tunnel socket is its default).
            var (code, there, problem) = await PeerMigration.Create(p.GetValue(stateDir)!).PeerStatusAsync(peer, p.GetValue(name)!, p.GetValue(json), null, ct)
                .ConfigureAwait(false);
            if (p.GetValue(json))
            {
                var document = new System.Text.Json.Nodes.JsonObject
                {
                    ["local"] = System.Text.Json.Nodes.JsonNode.Parse(here),
                    ["peer"] = new System.Text.Json.Nodes.JsonObject
                    {
                        ["address"] = peer.Uri,
                        ["status"] = code == 0 ? System.Text.Json.Nodes.JsonNode.Parse(there) : null,
                        ["error"] = code == 0 ? null : ToolErrors.OneLine(problem),
                    },
                };
                await output.WriteLineAsync(document.ToJsonString(new JsonSerializerOptions { WriteIndented = true })).ConfigureAwait(false);
            }
            else
            {
                await output.WriteLineAsync(here + $"\npeer {peer.Address}:\n" + (code == 0
                    ? "  " + there.TrimEnd().Replace("\n", "\n  ", StringComparison.Ordinal)
                    : "  ! the peer's status could not be read: " + ToolErrors.OneLine(problem))).ConfigureAwait(false);
            }

            return code == 0 ? ExitCodes.Success : ExitCodes.Failure;
        });
        return command;
    }

    internal static string Render(MigrationStatus status)
    {
        var lines = new List<string>
        {
            $"migration {status.Name} ({status.Side.ToString().ToLowerInvariant()} side)",
            string.Create(CultureInfo.InvariantCulture,
                $"  tunnel  {status.TunnelDevice} {status.LocalOuter} -> {status.RemoteOuter} ({(status.Encapsulation == "udp" ? "GRE in UDP" : "GRE")}), {(status.TunnelUp ? "up" : "DOWN")}, rx {status.TunnelRxPackets} tx {status.TunnelTxPackets} packets"),
        };
        if (status.DirectPackets is { } direct)
        {
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"  direct  {direct} packets for the moved addresses arrived without the tunnel"));
        }

        if (status.AgentCounters is { } c)
        {
            lines.Add(string.Create(CultureInfo.InvariantCulture,
                $"  agent   tx {c.TxPackets} packets ({c.TxErrors} failed, {c.TxTooBig} too big, {c.TxDropped} not IP, {c.TxRefused} refused), rx {c.RxPackets} packets ({c.RxStray} stray, {c.RxWrongKey} wrong key, {c.RxMalformed} malformed, {c.RxErrors} not delivered)"));
        }

        lines.Add("  TUPLE                          TUNNELLED  HERE");
        lines.AddRange(status.Tuples.Select(t => string.Create(CultureInfo.InvariantCulture,
            $"  {t.Tuple,-30} {t.TunnelledFlows?.ToString(CultureInfo.InvariantCulture) ?? "unknown",9} {t.LocalFlows?.ToString(CultureInfo.InvariantCulture) ?? "unknown",5}")));
        lines.AddRange(status.Warnings.Select(w => "  ! " + w));
        return string.Join('\n', lines);
    }

    /// <summary>What a command did here (null when it ran only on the peer) and what the peer answered (null without one).</summary>
    private sealed record Done(MigrationOutcome? Local, MigrationAnswer? Peer = null, PeerAddress? PeerAddress = null)
    {
        public static Done Of(BothSides both) => new(both.Local, both.Peer, both.Connection.Address);
    }

    private static string Seconds(TimeSpan span) => string.Create(CultureInfo.InvariantCulture, $"{Math.Ceiling(span.TotalSeconds)}s");

    private static async Task<int> RunAsync(ParseResult parseResult, Func<MigrationHost, PeerMigration, Task<Done>> run, Option<string> stateDir, Option<bool> json)
    {
        var output = parseResult.InvocationConfiguration.Output;
        var error = parseResult.InvocationConfiguration.Error;
        var asJson = parseResult.GetValue(json);
        Done done;
        try
        {
            var root = parseResult.GetValue(stateDir)!;
            done = await run(MigrationHost.Create(root), PeerMigration.Create(root)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is MigrationException or StateException or Processes.CommandException)
        {
            var problems = e is MigrationException m ? m.Problems : [e.Message];
            foreach (var problem in problems)
            {
                await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(problem)).ConfigureAwait(false);
            }

            if (asJson)
            {
                await output.WriteLineAsync(MigrationAnswer.Failed(problems.Select(ToolErrors.OneLine)).ToJson()).ConfigureAwait(false);
            }

            return ExitCodes.Failure;
        }

        if (asJson)
        {
            var answer = done.Local is { } local ? MigrationAnswer.From(local) : new MigrationAnswer(true, done.Peer?.DryRun ?? false, [], null, []);
            await output.WriteLineAsync((done.Peer is null ? answer : answer with { Peer = [done.Peer] }).ToJson()).ConfigureAwait(false);
            return ExitCodes.Success;
        }

        if (done.Local is { } outcome)
        {
            await WriteAsync(output, outcome, indent: string.Empty).ConfigureAwait(false);
        }

        if (done.Peer is { } peer)
        {
            await output.WriteLineAsync($"peer {done.PeerAddress}:").ConfigureAwait(false);
            foreach (var line in peer.Describe())
            {
                await output.WriteLineAsync("  " + line).ConfigureAwait(false);
            }
        }

        return ExitCodes.Success;
    }

    private static async Task WriteAsync(TextWriter output, MigrationOutcome outcome, string indent)
    {
        var verb = outcome.DryRun ? "would" : "did";
        foreach (var change in outcome.Changes)
        {
            await output.WriteLineAsync($"{indent}{verb}: {change.Description}").ConfigureAwait(false);
            if (outcome.DryRun)
            {
                foreach (var command in change.Apply)
                {
                    await output.WriteLineAsync(indent + "    " + command.ToString().Replace("\n", "\n    " + indent, StringComparison.Ordinal)).ConfigureAwait(false);
                }
            }
        }

        if (outcome.Note is not null)
        {
            await output.WriteLineAsync(indent + outcome.Note).ConfigureAwait(false);
        }
    }

    private static IPAddress? ParseAddress(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (IPAddress.TryParse(text, out var address))
        {
            return address;
        }

        result.AddError($"'{text}' is not an IP address.");
        return null;
    }

    private static uint? ParseMark(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        var ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.TryParse(text[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var value)
            : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok)
        {
            result.AddError($"--mark '{text}' is not a number (decimal or 0x hex).");
        }
        else if (value == 0)
        {
            result.AddError("--mark must not be 0: every packet without a mark has 0. Leave --mark out to get a free one.");
        }
        else if (!Switchover.Netfilter.SteeringTable.FitsConnectionMark(value))
        {
            result.AddError(string.Create(CultureInfo.InvariantCulture,
                $"--mark 0x{value:x} uses the bits 0x{Switchover.Netfilter.HandoffTable.CtMarkMask:x8}, where Switchover hosting keeps its generations' connection marks. Give a mark without them (e.g. 0x2f), or leave --mark out to get a free one."));
        }

        return value;
    }

    private static SteeredTuple[] ParseTuples(ArgumentResult result) =>
        result.Tokens.Select(t => ParseTuple(result, t.Value)).OfType<SteeredTuple>().ToArray();

    private static SteeredTuple? ParseTuple(ArgumentResult result, string text)
    {
        try
        {
            return SteeredTuple.Parse(text);
        }
        catch (FormatException e)
        {
            result.AddError(e.Message);
            return null;
        }
    }
}
