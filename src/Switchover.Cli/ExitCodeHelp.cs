using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace Switchover.Cli;

/// <summary>The exit codes one command can return, and what each means for that command.</summary>
internal sealed record ExitCodeHelp(IReadOnlyList<(int Code, string Meaning)> Codes);

/// <summary>
/// The standard help, followed by an "Exit codes:" section for the command asked about. Scripts branch on exit
/// codes, so they are documented where a user looks, not only in the README.
/// </summary>
internal sealed class HelpWithExitCodesAction(HelpAction help, IReadOnlyDictionary<Command, ExitCodeHelp> exitCodes) : SynchronousCommandLineAction
{
    public override bool ClearsParseErrors => true;

    public static void Install(RootCommand root, IReadOnlyDictionary<Command, ExitCodeHelp> exitCodes)
    {
        var option = root.Options.OfType<HelpOption>().Single();
        option.Action = new HelpWithExitCodesAction((HelpAction)option.Action!, exitCodes);
    }

    public override int Invoke(ParseResult parseResult)
    {
        var result = help.Invoke(parseResult);
        if (exitCodes.TryGetValue(parseResult.CommandResult.Command, out var codes))
        {
            var output = parseResult.InvocationConfiguration.Output;
            output.WriteLine("Exit codes:");
            foreach (var (code, meaning) in codes.Codes)
            {
                output.WriteLine($"  {code}  {meaning}");
            }

            output.WriteLine();
        }

        return result;
    }
}
