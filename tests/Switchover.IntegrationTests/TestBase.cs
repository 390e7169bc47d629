using System.Net;
using System.Net.Sockets;
using Switchover.Lab;

namespace Switchover.IntegrationTests;

/// <summary>Shared steps: a lab of two hosts, load at the public port from both paths, deploys, assertions.</summary>
public abstract class TestBase(ITestOutputHelper output) : IAsyncLifetime
{
    protected const int PublicPort = 8080;
    protected static readonly TimeSpan TakeoverTimeout = TimeSpan.FromSeconds(60);

    private readonly List<IAsyncDisposable> _cleanup = [];

    protected ITestOutputHelper Output { get; } = output;

    protected TwoHostLab Lab { get; private set; } = null!;

    protected SwitchoverService Service { get; private set; } = null!;

    /// <summary>Cancels every step of a test that runs away; each test also has its own xunit timeout.</summary>
    protected CancellationToken Token => Timeout.Token;

    private CancellationTokenSource Timeout { get; } = new(TimeSpan.FromMinutes(4));

    public async Task InitializeAsync()
    {
        Prerequisites.Require();
        Lab = await TwoHostLab.CreateAsync(Token);
        Service = new SwitchoverService(Lab.Server, publicPort: PublicPort);
    }

    /// <summary>
    /// Runs every cleanup step even when one throws, then checks that the test left nothing behind: its namespaces
    /// and its state directory. A leftover fails this test by name instead of the CI run at the end.
    /// </summary>
    public async Task DisposeAsync()
    {
        var errors = new List<Exception>();
        var stateDirectory = Service?.StateDirectory;
        var namespaces = Lab is null ? [] : new[] { Lab.Server.Name, Lab.Client.Name };
        foreach (var step in Enumerable.Reverse(_cleanup).Append(Service).Append<IAsyncDisposable?>(Lab))
        {
            try
            {
                if (step is not null)
                {
                    await step.DisposeAsync();
                }
            }
            catch (Exception e)
            {
                errors.Add(e);
            }
        }

        Timeout.Dispose();

        // A generation the service did not launch itself (deploy's detached one, an agent's) may have written state
        // after the service removed it and before the namespace's processes were killed.
        if (stateDirectory is not null && Directory.Exists(stateDirectory))
        {
            Directory.Delete(stateDirectory, recursive: true);
        }

        var left = namespaces.Where(name => File.Exists(Path.Combine("/run/netns", name))).ToList();
        if (left.Count > 0)
        {
            errors.Add(new InvalidOperationException($"The test left network namespaces behind: {string.Join(", ", left)} (see the cleanup warning above)."));
        }

        if (errors.Count > 0)
        {
            throw new AggregateException("Cleanup after the test failed.", errors);
        }
    }

    protected T Track<T>(T disposable)
        where T : IAsyncDisposable
    {
        _cleanup.Add(disposable);
        return disposable;
    }

    /// <summary>Clients on the network (the client namespace, over the veth, IPv4 and IPv6) and on the host itself (loopback).</summary>
    protected IReadOnlyList<LoadTarget> AllPaths() => Lab.AllPaths(PublicPort);

    protected static LoadOptions Load(ConnectionMode mode, TimeSpan duration, int concurrency = 2) => new()
    {
        Mode = mode,
        Concurrency = concurrency,
        MaxDuration = duration,
        MaxRequests = 50_000_000,
        RequestTimeout = TimeSpan.FromSeconds(10),
        BodyValidator = body => body.Length > 0,
    };

    /// <summary>Asserts that no request failed, printing the first failures if any did.</summary>
    protected void AssertNoFailures(LoadResult result)
    {
        Output.WriteLine(result.ToString());
        if (result.FailureCount > 0)
        {
            foreach (var failure in result.Failures.Take(30))
            {
                Output.WriteLine(failure.ToString());
            }
        }

        Assert.True(result.TotalRequests > 0, "The load run sent no request.");
        Assert.Equal(0, result.FailureCount);

        // A kept-alive connection the server closed without saying "Connection: close" is a request a less careful
        // client would have lost; the driver discards such connections before sending, so count them here.
        Assert.Equal(0, result.StaleConnectionsDiscarded);
    }

    /// <summary>Sends one GET from a namespace with its own fresh connection and returns status and body.</summary>
    protected static async Task<(int Status, string Body)> GetAsync(NetworkNamespace from, IPEndPoint to, string path, CancellationToken cancellationToken)
    {
        using var handler = HandlerFrom(from, to);
        using var client = new HttpClient(handler) { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
        var host = to.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{to.Address}]" : to.Address.ToString();
        using var response = await client.GetAsync(new Uri($"http://{host}:{to.Port}{path}"), cancellationToken);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
    }

    /// <summary>An HTTP handler whose connections (a new one per request) are opened from inside <paramref name="from"/> to <paramref name="to"/>.</summary>
    protected static SocketsHttpHandler HandlerFrom(NetworkNamespace from, IPEndPoint to) => new()
    {
        UseProxy = false,
        PooledConnectionLifetime = TimeSpan.Zero,
        ConnectCallback = async (_, ct) =>
        {
            var socket = from.CreateSocket(to.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(to, ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    };

    /// <summary>The pid in an echo body "TEXT PID".</summary>
    protected static int PidOf(string body) => int.Parse(body.Trim().Split(' ')[^1], System.Globalization.CultureInfo.InvariantCulture);

    protected static string TextOf(string body) => body.Trim().Split(' ')[0];

    /// <summary>Waits until the process exits on its own, failing with its output if it does not in time.</summary>
    protected static async Task<int> ExitsWithinAsync(LabProcess process, TimeSpan timeout)
    {
        try
        {
            return await process.Exited.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"{process} did not exit within {timeout.TotalSeconds} s.\n{process.Output}");
            throw;
        }
    }
}
