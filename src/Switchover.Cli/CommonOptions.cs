using System.CommandLine;
using Switchover.State;

namespace Switchover.Cli;

/// <summary>Options shared by several commands. Each call returns a new instance: an option belongs to one command.</summary>
internal static class CommonOptions
{
    public static Option<NamespaceName> Namespace(string description, bool required) => new("--namespace", "-n")
    {
        Description = description,
        HelpName = "NAME",
        Required = required,
        CustomParser = ParseNamespace,
    };

    public static Option<string> StateDirectory() => new("--state-dir")
    {
        Description = "The state root that holds one directory per namespace.",
        HelpName = "DIR",
        DefaultValueFactory = _ => StateStore.DefaultRoot,
    };

    /// <summary>
    /// The name ends up in an nft table name and a path, so it is validated while parsing: an invalid one is a
    /// usage error (exit code 2) and no command runs.
    /// </summary>
    internal static NamespaceName? ParseNamespace(System.CommandLine.Parsing.ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
        var error = text.Length == 0
            ? "--namespace is empty; give the name of a namespace, made of [a-z0-9_-]."
            : NamespaceName.Validate(text);
        if (error is not null)
        {
            result.AddError(error);
            return null;
        }

        return NamespaceName.Parse(text);
    }
}
