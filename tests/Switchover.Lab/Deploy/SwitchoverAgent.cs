using System.Globalization;
using System.Text.Json;

namespace Switchover.Lab;

/// <summary>
/// A real <c>switchover agent</c> process inside a network namespace, with its own directory (socket, policy, state
/// root) that every user may traverse, so that generations running as other users reach the socket and read the state.
/// Can be killed and started again on the same socket; leaves nothing behind.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SwitchoverAgent : IAsyncDisposable
{
    private readonly List<LabProcess> _runs = [];

    private SwitchoverAgent(NetworkNamespace host, string directory)
    {
        Host = host;
        Directory = directory;
    }

    public NetworkNamespace Host { get; }

    /// <summary>/tmp/switchover-agent-XXXX: agent.sock, agent.json, state/.</summary>
    public string Directory { get; }

    public string SocketPath => Path.Combine(Directory, "agent.sock");

    public string PolicyPath => Path.Combine(Directory, "agent.json");

    public string StateRoot => Path.Combine(Directory, "state");

    /// <summary>The agent process running now (the last one started).</summary>
    public LabProcess Process => _runs[^1];

    /// <summary>Everything every agent process of this fixture logged, in order.</summary>
    public string Log => string.Join('\n', _runs.Select(r => r.Output));

    /// <summary>
    /// Writes the policy (namespace to users and ports) and starts the agent; returns once it listens.
    /// </summary>
    /// <param name="environment">Extra environment of the first agent process only (e.g. a test pause); those started again get none.</param>
    public static async Task<SwitchoverAgent> StartAsync(NetworkNamespace host, IReadOnlyDictionary<string, (string[] Users, int[] Ports)> policy,
        CancellationToken cancellationToken, IReadOnlyDictionary<string, string>? environment = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "switchover-agent-" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray().AsSpan(0, 4)));
        var traversable = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead |
            UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        System.IO.Directory.CreateDirectory(directory, traversable);
        var agent = new SwitchoverAgent(host, directory);
        System.IO.Directory.CreateDirectory(agent.StateRoot, traversable);
        await File.WriteAllTextAsync(agent.PolicyPath, PolicyJson(policy), cancellationToken).ConfigureAwait(false);
        await agent.StartAgainAsync(cancellationToken, environment: environment).ConfigureAwait(false);
        return agent;
    }

    public static string PolicyJson(IReadOnlyDictionary<string, (string[] Users, int[] Ports)> policy)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("namespaces");
            foreach (var (name, (users, ports)) in policy)
            {
                json.WriteStartObject(name);
                json.WriteStartArray("users");
                foreach (var user in users)
                {
                    json.WriteStringValue(user);
                }

                json.WriteEndArray();
                json.WriteStartArray("ports");
                foreach (var port in ports)
                {
                    json.WriteNumberValue(port);
                }

                json.WriteEndArray();
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>
    /// Starts an agent process (again, after <see cref="KillAsync"/>), through <paramref name="launcher"/> if given, and
    /// waits until it listens unless told not to (systemd-socket-activate starts it on the first connection only).
    /// </summary>
    public async Task StartAgainAsync(CancellationToken cancellationToken, IEnumerable<string>? launcher = null, bool waitUntilListening = true,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        string[] command = [Artifacts.Cli, "agent", "--socket", SocketPath, "--policy", PolicyPath, "--state-dir", StateRoot];
        var prefix = launcher?.ToArray() ?? [];
        var process = prefix.Length == 0
            ? Host.StartProcess("dotnet", command, environment)
            : Host.StartProcess(prefix[0], [.. prefix.Skip(1), "dotnet", .. command], environment);
        _runs.Add(process);
        if (!waitUntilListening)
        {
            return;
        }

        await process.WaitForOutputAsync("listening on", TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>SIGKILL: the agent gets no chance to clean anything up (its socket file stays, refusing connections).</summary>
    public async Task KillAsync()
    {
        Process.Kill();
        await Process.Exited.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var run in _runs)
        {
            if (!run.HasExited)
            {
                run.SendSignal(Signals.Terminate);
                try
                {
                    await run.Exited.WaitAsync(TimeSpan.FromSeconds(20)).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    await Console.Error.WriteLineAsync($"{run} did not stop within 20 s of SIGTERM; killing it.").ConfigureAwait(false);
                }
            }

            await run.DisposeAsync().ConfigureAwait(false);
        }

        if (System.IO.Directory.Exists(Directory))
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
    }

    public override string ToString() => $"agent at {SocketPath} ({_runs.Count.ToString(CultureInfo.InvariantCulture)} run(s))";
}
