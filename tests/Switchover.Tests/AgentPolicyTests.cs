using System.Net.Sockets;
using Switchover.Agent;
using Switchover.Hosting;
using Switchover.State;

namespace Switchover.Tests;

public sealed class AgentPolicyTests
{
    private const string Valid = """
        {
          // comments and trailing commas are allowed
          "namespaces": {
            "echo": { "users": ["web", "2000"], "groups": ["staff"], "ports": [8080, 8443], },
            "mail": { "users": ["3000"], "ports": [2525] }
          }
        }
        """;

    private static AgentPolicy Parse(string text) =>
        AgentPolicy.Parse("/etc/switchover/agent.json", text, u => u == "web" ? 1000u : null, g => g == "staff" ? 50u : null);

    private static AgentPeer Peer(uint uid, uint gid = 100, params uint[] groups) => new(4242, uid, gid, groups, new ProcessIdentity(4242, 1));

    [Fact]
    public void A_listed_user_may_use_its_namespace_with_its_ports()
    {
        var policy = Parse(Valid);

        Assert.Null(policy.MayTakeOver(Peer(1000), NamespaceName.Parse("echo"), [8080, 8443]));
        Assert.Null(policy.MayTakeOver(Peer(2000), NamespaceName.Parse("echo"), [8080]));
    }

    [Fact]
    public void A_member_of_a_listed_group_may_as_its_primary_or_a_supplementary_group()
    {
        var policy = Parse(Valid);

        Assert.Null(policy.MayUse(Peer(7000, gid: 50), NamespaceName.Parse("echo")));
        Assert.Null(policy.MayUse(Peer(7000, 100, 12, 50), NamespaceName.Parse("echo")));
    }

    [Fact]
    public void Another_user_may_not_use_the_namespace_and_is_told_who_may()
    {
        var refusal = Parse(Valid).MayUse(Peer(3000), NamespaceName.Parse("echo"));

        Assert.Equal("uid 3000 (gid 100) may not use namespace 'echo': the agent policy /etc/switchover/agent.json gives it to uid 1000, 2000 and gid 50 only.", refusal);
    }

    [Fact]
    public void A_namespace_may_not_take_over_a_port_of_another_namespace_or_of_none()
    {
        var policy = Parse(Valid);

        Assert.Equal("namespace 'mail' may not take over public port 8080: it belongs to namespace 'echo' in the agent policy /etc/switchover/agent.json (namespace 'mail' has 2525).",
            policy.MayTakeOver(Peer(3000), NamespaceName.Parse("mail"), [2525, 8080]));
        Assert.Contains("public port 9999: no namespace has it", policy.MayTakeOver(Peer(3000), NamespaceName.Parse("mail"), [9999]), StringComparison.Ordinal);
    }

    [Fact]
    public void A_namespace_the_policy_does_not_name_is_refused_to_everyone_but_root()
    {
        var policy = Parse(Valid);

        Assert.Contains("does not name it", policy.MayUse(Peer(1000), NamespaceName.Parse("other")), StringComparison.Ordinal);
        Assert.Null(policy.MayTakeOver(Peer(0), NamespaceName.Parse("other"), [22]));
    }

    [Fact]
    public void Every_problem_of_an_invalid_policy_is_reported_at_once()
    {
        var e = Assert.Throws<AgentPolicyException>(() => Parse("""
            { "namespaces": {
                "Bad Name": { "users": ["web"], "ports": [1] },
                "a": { "users": ["ghost"], "ports": [8080, 70000] },
                "b": { "groups": [], "ports": [8080] },
                "c": { "users": ["web"] }
            } }
            """));

        Assert.Contains("invalid; the agent does not start", e.Message, StringComparison.Ordinal);
        Assert.Contains("namespace 'Bad Name':", e.Message, StringComparison.Ordinal);
        Assert.Contains("user 'ghost' does not exist on this host", e.Message, StringComparison.Ordinal);
        Assert.Contains("port 70000 is not a TCP port", e.Message, StringComparison.Ordinal);
        Assert.Contains("port 8080 is given to namespaces 'a' and 'b'", e.Message, StringComparison.Ordinal);
        Assert.Contains("namespace 'b': no users and no groups", e.Message, StringComparison.Ordinal);
        Assert.Contains("namespace 'c': no ports", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{ "namespaces": { "a": { "users": ["web"], "ports": [80], "portz": [1] } } }""")]
    [InlineData("""{ "namespace": {} }""")]
    [InlineData("not json")]
    public void A_policy_of_another_shape_is_refused_with_the_expected_shape(string text)
    {
        var e = Assert.Throws<AgentPolicyException>(() => Parse(text));

        Assert.Contains("Expected: { \"namespaces\"", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_policy_file_says_how_to_give_one()
    {
        var e = Assert.Throws<AgentPolicyException>(() => AgentPolicy.Load("/nonexistent/agent.json"));

        Assert.Contains("Cannot read the agent policy /nonexistent/agent.json", e.Message, StringComparison.Ordinal);
        Assert.Contains("--policy PATH", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Names_resolve_through_the_system_user_database()
    {
        // root and its group exist on every Linux host.
        var policy = AgentPolicy.Parse("p", """{ "namespaces": { "a": { "users": ["root"], "groups": ["root"], "ports": [1] } } }""",
            name => name == "root" ? 0u : null, name => name == "root" ? 0u : null);
        Assert.Null(policy.MayUse(Peer(0), NamespaceName.Parse("a")));
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, """{ "namespaces": { "a": { "users": ["root", "nobody"], "groups": ["root"], "ports": [1] } } }""");
            var loaded = AgentPolicy.Load(file);
            Assert.Null(loaded.MayUse(Peer(65534), NamespaceName.Parse("a")));
            Assert.NotNull(loaded.MayUse(Peer(1234), NamespaceName.Parse("a")));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("auto", false, true, HandoffAgent.DefaultSocketPath)]
    [InlineData("auto", true, true, null)]
    [InlineData("auto", false, false, null)]
    [InlineData("off", false, true, null)]
    [InlineData("/run/agent.sock", true, false, "/run/agent.sock")]
    public void The_agent_is_used_by_an_unprivileged_app_when_its_socket_exists_or_when_named(string setting, bool privileged, bool socketExists, string? expected) =>
        Assert.Equal(expected, HandoffBackends.Choose(setting, privileged, _ => socketExists));

    [Fact]
    public void Systemd_sockets_are_taken_only_when_they_are_meant_for_this_process()
    {
        Assert.Empty(SystemdSockets.Take(listenPid: "1", listenFds: "1", self: 2, unset: false));
        Assert.Empty(SystemdSockets.Take(listenPid: "2", listenFds: "0", self: 2, unset: false));
        Assert.Empty(SystemdSockets.Take(listenPid: null, listenFds: null, self: 2, unset: false));
    }

    [Fact]
    public void A_request_and_a_reply_survive_the_wire_format()
    {
        var request = new AgentRequest(AgentOperations.Register)
        {
            Namespace = "echo",
            Ports = [new PortMapping(8080, 40001), new PortMapping(8443, 40002, "192.0.2.1")],
            Steering = Steering.Tproxy,
        };
        var line = AgentProtocol.Encode(request);

        Assert.Equal((byte)'\n', line[^1]);
        Assert.DoesNotContain((byte)'\n', line[..^1]);
        var decoded = AgentProtocol.DecodeRequest(line.AsSpan(0, line.Length - 1));
        Assert.Equal(request.Ports, decoded.Ports);
        Assert.Equal(request with { Ports = decoded.Ports }, decoded);
        Assert.Contains("\"steering\":\"Tproxy\"", System.Text.Encoding.UTF8.GetString(line), StringComparison.Ordinal);
    }

    [Fact]
    public void A_descriptor_sent_with_a_line_arrives_with_it()
    {
        var (left, right) = SocketPair();
        using var sender = new LineConnection(left);
        using var receiver = new LineConnection(right);
        using var passed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        passed.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));

        sender.Write("{\"op\":\"x\"}\n"u8.ToArray(), passed.SafeHandle);
        var descriptors = new List<int>();
        var line = receiver.ReadLine(TimeSpan.FromSeconds(5), descriptors);

        Assert.Equal("{\"op\":\"x\"}", System.Text.Encoding.UTF8.GetString(line!));
        var fd = Assert.Single(descriptors);
        try
        {
            // The same socket: bound where the sender bound it.
            Assert.Equal(((System.Net.IPEndPoint)passed.LocalEndPoint!).Port, Interop.Libc.GetSocketName(fd)!.Port);
        }
        finally
        {
            _ = Interop.Libc.Close(fd);
        }
    }

    private static (Socket, Socket) SocketPair()
    {
        var path = Path.Combine(Path.GetTempPath(), "agent-test-" + Guid.NewGuid().ToString("N")[..8] + ".sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(path));
        var server = listener.Accept();
        File.Delete(path);
        return (client, server);
    }
}
