namespace Switchover;

/// <summary>
/// A validated Switchover namespace name. It appears in nftables table names and file paths,
/// so anything outside <c>[a-z0-9_-]</c> is rejected before any rule is rendered.
/// </summary>
public sealed record NamespaceName
{
    public const int MaxLength = 40;

    private NamespaceName(string value) => Value = value;

    public string Value { get; }

    /// <summary>The nftables table that this namespace owns (family inet).</summary>
    public string TableName => "switchover_" + Value;

    public static NamespaceName Parse(string? value)
    {
        var error = Validate(value);
        return error is null ? new NamespaceName(value!) : throw new ArgumentException(error, nameof(value));
    }

    /// <summary>Returns null when the name is valid, else a message that says what is wrong and what to do.</summary>
    public static string? Validate(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "The Switchover namespace is empty. Set Switchover:Namespace to a name made of [a-z0-9_-].";
        }

        if (value.Length > MaxLength)
        {
            return $"The Switchover namespace '{Printable(value)}' is {value.Length} characters long; at most {MaxLength} are allowed.";
        }

        foreach (var c in value)
        {
            if (!IsAllowed(c))
            {
                return $"The Switchover namespace '{Printable(value)}' contains '{Printable(c.ToString())}'. A namespace may contain only [a-z0-9_-].";
            }
        }

        return null;
    }

    /// <summary>Derives a valid name from an application name: lower case, anything else becomes '-'.</summary>
    public static NamespaceName FromApplicationName(string applicationName)
    {
        var chars = applicationName.ToLowerInvariant().Select(c => IsAllowed(c) ? c : '-').ToArray();
        var name = new string(chars).Trim('-');
        if (name.Length > MaxLength)
        {
            name = name[..MaxLength];
        }

        return Parse(name.Length == 0 ? "app" : name);
    }

    public override string ToString() => Value;

    private static bool IsAllowed(char c) => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_' or '-';

    private static string Printable(string value) =>
        new(value.Select(c => char.IsControl(c) ? '?' : c).ToArray());
}
