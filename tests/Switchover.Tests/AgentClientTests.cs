using System.Net.Sockets;
using Switchover.Agent;
using Switchover.Hosting;
using Switchover.State;

namespace Switchover.Tests;

/// <summary>The app's side of the agent protocol against a scripted agent on a real Unix socket.</summary>
public sealed class AgentClientTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("switchover-agent-client-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact(Timeout = 20000)]
    public async Task When_the_agent_dies_between_the_commit_and_its_last_answer_the_previous_generation_is_told_through_the_next_request()
    {
        var socketPath = Path.Combine(_directory, "agent.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(4);
        var previous = new GenerationRecord(1, 101, 7, GenerationState.Draining, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40001)], Steering.Tproxy);
        var taken = new GenerationRecord(2, 102, 7, GenerationState.Active, DateTimeOffset.UnixEpoch, [new PortMapping(8080, 40002)], Steering.Tproxy);
        var asked = new List<AgentRequest>();

        // The agent: commits the takeover, reads the acknowledgement and dies (closes) before its last answer; then
        // answers whatever comes next.
        var agent = Task.Run(() =>
        {
            for (var connection = 0; connection < 2; connection++)
            {
                using var socket = listener.Accept();
                using var lines = new LineConnection(socket);
                var request = AgentProtocol.DecodeRequest(lines.ReadLine(TimeSpan.FromSeconds(5), [])!);
                asked.Add(request);
                if (request.Op == AgentOperations.TakeOver)
                {
                    lines.Write(AgentProtocol.Encode(new AgentResponse(true)
                    {
                        Phase = "committed",
                        Generation = taken,
                        Previous = [previous],
                        State = new NamespaceState(1, "echo", 2, [previous, taken]),
                    }));
                    asked.Add(AgentProtocol.DecodeRequest(lines.ReadLine(TimeSpan.FromSeconds(5), [])!));
                }
                else
                {
                    lines.Write(AgentProtocol.Encode(new AgentResponse(true)));
                }
            }
        });

        var backend = new AgentHandoffBackend(new AgentClient(socketPath, TimeSpan.FromSeconds(5)), NamespaceName.Parse("echo"), TimeSpan.FromSeconds(5));
        var result = await backend.TakeOverAsync(2, CancellationToken.None);
        await agent.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(2, result.Generation.Id);
        Assert.Empty(result.SignalFailures);
        Assert.Equal([AgentOperations.TakeOver, AgentOperations.Acknowledge, AgentOperations.SignalToDrain], asked.Select(r => r.Op));
        Assert.Equal(1, asked[^1].Generation);
    }
}
