using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Switchover.Cli.Doctor;

/// <summary><c>switchover doctor</c>: what on this host would keep a handoff from working, one line each. Changes nothing.</summary>
internal static class DoctorCommand
{
    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "nothing to do: every check is ok (info lines are only information)"),
        (ExitCodes.Failure, "at least one problem: something will not work (the port is dropped or captured, a kernel feature, tool or " +
            "privilege is missing, the namespace's table is wrong, or the ruleset could not be read)"),
        (ExitCodes.Usage, "the command line is wrong; nothing was checked"),
        (ExitCodes.Warnings, "warnings, no problem: doctor could not tell (rules it does not understand), or something may bite"),
    ]);

    public static Command Create(ToolOptions tools)
    {
        var ns = CommonOptions.Namespace(
            "Also check this namespace: its state, whether its table points at a live generation, and its public ports.", required: false);
        var stateDir = CommonOptions.StateDirectory();
        var port = new Option<int[]>("--port", "-p")
        {
            Description = "A public port to check (repeatable). Default: the namespace's public ports.",
            HelpName = "PORT",
            AllowMultipleArgumentsPerToken = false,
            CustomParser = ParsePorts,
        };
        var steering = new Option<Steering?>("--steering")
        {
            Description = "The steering to check for: tproxy or redirect (Switchover:Steering). Default: what the namespace's table does, else tproxy.",
            HelpName = "tproxy|redirect",
            CustomParser = ParseSteering,
        };
        var json = new Option<bool>("--json")
        {
            Description = "Print one JSON document: every finding with its check, subject, severity, message and advice, the counts and the exit code.",
        };
        var command = new Command("doctor",
            "Check this host (and the current network namespace) for what would break a handoff: privileges, nft and conntrack, kernel " +
            "features, the firewall and its input policy, whether the public port is allowed, rules that capture or drop it, and Docker's " +
            "NAT priority. One line each, with what to do. Reads only; changes nothing.")
        {
            ns,
            port,
            steering,
            stateDir,
            json,
        };

        command.SetAction(async (parseResult, cancellationToken) =>
        {
            var request = new DoctorRequest(parseResult.GetValue(port) ?? [], parseResult.GetValue(ns), parseResult.GetValue(steering));
            var facts = await HostProbe.Create().CollectAsync(parseResult.GetValue(tools.Nft) ?? "nft", parseResult.GetValue(tools.Conntrack) ?? "conntrack",
                request.Namespace, parseResult.GetValue(stateDir)!, cancellationToken).ConfigureAwait(false);
            var report = DoctorAnalysis.Analyze(facts, request);
            var output = parseResult.InvocationConfiguration.Output;
            await output.WriteAsync(parseResult.GetValue(json) ? DoctorJson.Serialize(report) + "\n" : DoctorText.Render(report)).ConfigureAwait(false);
            return report.ExitCode;
        });
        return command;
    }

    private static int[] ParsePorts(ArgumentResult result)
    {
        var ports = new List<int>();
        foreach (var token in result.Tokens)
        {
            if (!int.TryParse(token.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var p) || p is < 1 or > 65535)
            {
                result.AddError($"--port '{token.Value}' is not a TCP port; give a number from 1 to 65535.");
                return [];
            }

            ports.Add(p);
        }

        return [.. ports.Distinct()];
    }

    private static Steering? ParseSteering(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        switch (text.ToLowerInvariant())
        {
            case "tproxy":
                return Steering.Tproxy;
            case "redirect":
                return Steering.Redirect;
            default:
                result.AddError($"--steering '{text}' is not a steering; give tproxy or redirect.");
                return null;
        }
    }
}
