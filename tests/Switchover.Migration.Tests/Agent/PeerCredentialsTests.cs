using System.Net.Sockets;
using Switchover.Migration.Gre;

namespace Switchover.Migration.Tests.Agent;

public sealed class PeerCredentialsTests
{
    [Theory]
    [InlineData(0u, 0u, true)]      // root asks a root agent
    [InlineData(0u, 1000u, true)]   // root asks anyone's agent
    [InlineData(1000u, 1000u, true)] // the agent's own user
    [InlineData(1001u, 1000u, false)]
    [InlineData(65534u, 0u, false)] // nobody asks a root agent
    public void Only_root_and_the_agents_own_user_may_control_it(uint peer, uint agent, bool allowed)
    {
        Assert.Equal(allowed, PeerCredentials.IsAllowed(peer, agent));
    }

    [Fact(Timeout = 10_000)]
    public async Task The_kernel_reports_the_connecting_process_its_pid_and_uid()
    {
        var path = Path.Combine(Path.GetTempPath(), $"so-cred-{Guid.NewGuid():N}.sock");
        try
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen();
            using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await client.ConnectAsync(new UnixDomainSocketEndPoint(path));
            using var accepted = await listener.AcceptAsync();

            var peer = PeerCredentials.Read(accepted);
            Assert.Equal(Environment.ProcessId, peer.Pid);
            Assert.Equal(Switchover.Migration.Interop.Libc.GetEffectiveUserId(), peer.Uid);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
