using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Switchover.Cli;

/// <summary>
/// <c>switchover deploy [--namespace N] [--timeout T] [--json] -- COMMAND...</c>: launches the next generation and
/// reports whether it took over. For <c>ExecReload=</c> in a systemd unit, and for deploy scripts.
/// </summary>
internal static class DeployCommand
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(2);

    public static ExitCodeHelp ExitCodeHelp { get; } = new([
        (ExitCodes.Success, "the new generation took over: it serves the public ports now, and the previous one drains"),
        (ExitCodes.Failure, "deploy itself could not run (e.g. the state directory cannot be written); nothing was started"),
        (ExitCodes.Usage, "the command line is wrong; nothing was started"),
        (ExitCodes.DeployUnhealthy, "unhealthy: the generation did not get ready within its Switchover:ReadinessTimeout (health checks or its readiness request failed)"),
        (ExitCodes.DeployCrashed, "crashed: the generation exited before it took over without saying why (a crash, a kill, a stop signal); its exit status is printed (under a service manager, which adopts it, the journal has it)"),
        (ExitCodes.DeployLockTimeout, "lock timeout: the generation waited longer than Switchover:LockTimeout for the namespace lock (another deploy held it)"),
        (ExitCodes.DeploySuperseded, "superseded: a newer generation took over first"),
        (ExitCodes.DeployStartFailed, "start failure: the command could not be started, or not as a generation (invalid configuration, an endpoint that cannot move, nft missing, Switchover:Mode=Disabled)"),
        (ExitCodes.DeployTimedOut, "timed out: --timeout passed before the generation took over or failed; deploy stopped it"),
    ]);

    public static Command Create()
    {
        var ns = CommonOptions.Namespace(
            "The namespace to deploy into; the generation gets it as Switchover__Namespace in its environment. Default: the " +
            "namespace the generation reports (its Switchover:Namespace, or its application name).", required: false);
        var timeout = new Option<TimeSpan>("--timeout")
        {
            Description = "How long to wait for the generation to take over or fail, e.g. 90s, 2m, 500ms. It is stopped if it has " +
                "done neither by then. Make it longer than the app's Switchover:ReadinessTimeout plus its start time.",
            HelpName = "TIME",
            DefaultValueFactory = _ => DefaultTimeout,
            CustomParser = CommonOptions.ParseDuration,
        };
        var json = new Option<bool>("--json")
        {
            Description = "Print the result as one line of JSON (camelCase) on standard output, after whatever the generation printed there.",
        };
        var stateDir = CommonOptions.StateDirectory();
        var command = new Argument<string[]>("command")
        {
            Description = "The new generation's command line, after '--', e.g. -- dotnet /srv/app/App.dll --urls http://*:8080",
            Arity = ArgumentArity.OneOrMore,
        };
        var deploy = new Command("deploy",
            "Launch the next generation of a service and wait until it has taken the public ports over, or has failed. The " +
            "generation runs on after deploy exits, in deploy's cgroup, with deploy's standard output and error (under a service manager, " +
            "i.e. with NOTIFY_SOCKET set, it is forked away into a session of its own, so that the manager adopts it as the unit's main process); " +
            "if it fails, the running generation keeps serving and the reason and its last log lines are printed.")
        {
            ns,
            timeout,
            json,
            stateDir,
            command,
        };

        deploy.SetAction(async (parseResult, cancellationToken) =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            var deployment = new Deployment(parseResult.GetValue(command)!, parseResult.GetValue(ns), parseResult.GetValue(timeout),
                parseResult.GetValue(stateDir)!);
            DeployReport report;
            try
            {
                report = await deployment.RunAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (DeployStartException e)
            {
                await error.WriteLineAsync("switchover: " + ToolErrors.OneLine(e.Message)).ConfigureAwait(false);
                return ExitCodes.Failure;
            }

            if (parseResult.GetValue(json))
            {
                await output.WriteLineAsync(DeployJson.Serialize(report)).ConfigureAwait(false);
            }
            else
            {
                await (report.Result == DeployResult.TookOver ? output : error).WriteAsync(report.Render()).ConfigureAwait(false);
            }

            return report.ExitCode;
        });
        return deploy;
    }
}
