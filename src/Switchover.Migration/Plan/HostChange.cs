namespace Switchover.Migration.Plan;

/// <summary>A command with its arguments (never a shell string), and optional standard input.</summary>
public sealed record HostCommand(IReadOnlyList<string> Arguments, string? Input = null)
{
    public static HostCommand Of(params string[] arguments) => new(arguments);

    public override string ToString() =>
        string.Join(' ', Arguments) + (Input is null ? string.Empty : " <<EOF\n" + Input + "EOF");
}

/// <summary>
/// One change a migration makes to a host, with the commands that undo it exactly (original values recorded when
/// the change was planned). The journal keeps the applied ones, so teardown restores the host as it was.
/// </summary>
public sealed record HostChange(string Id, string Description, IReadOnlyList<HostCommand> Apply, IReadOnlyList<HostCommand> Undo);
