namespace Switchover.Lab.Tests;

/// <summary>
/// Tests that create namespaces and drive load. They run one at a time: on a two-core machine, load tests that run side
/// by side would measure each other.
/// </summary>
[CollectionDefinition(Name)]
public sealed class NetnsTestGroup
{
    public const string Name = "netns";
}
