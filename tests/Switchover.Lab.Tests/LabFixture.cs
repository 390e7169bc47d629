namespace Switchover.Lab.Tests;

/// <summary>One two-host lab shared by the tests of a class; each test starts its own servers on port 0.</summary>
public sealed class LabFixture : IAsyncLifetime
{
    private TwoHostLab? _lab;

    public TwoHostLab Lab => _lab ?? throw new InvalidOperationException("The lab is not created yet.");

    public async Task InitializeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        _lab = await TwoHostLab.CreateAsync(timeout.Token);
    }

    public async Task DisposeAsync()
    {
        if (_lab is not null)
        {
            await _lab.DisposeAsync();
        }
    }
}
