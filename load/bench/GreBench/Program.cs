using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Switchover.Lab;
using Switchover.Migration.Bench;
using Switchover.Migration.Gre;

var options = BenchOptions.Parse(args);
if (options is null)
{
    Console.Error.WriteLine("usage: GreBench [--seconds N (5)] [--round-trips N (20000)] [--outer 4|6 (4)] [--payload BYTES (64)] [--repeat N (3)] " +
        "[--streams N (4)] [--offload 0|1 (1)]");
    return 2;
}

if (Environment.UserName != "root")
{
    Console.Error.WriteLine("GreBench needs root (network namespaces, a TUN device, raw sockets).");
    return 1;
}

await using var bench = await BenchLab.CreateAsync(options.OuterV6, options.Offload);
Console.WriteLine($"GreBench: {bench}; {Environment.ProcessorCount} CPUs, .NET {Environment.Version}, kernel {Environment.OSVersion.Version}; " +
    $"load average before: {LoadAverage()}");
Console.WriteLine($"throughput: 1 and {options.Streams} TCP streams A -> B for {options.Seconds} s; latency: {options.RoundTrips} UDP round trips of {options.Payload} bytes; " +
    $"each {options.Repeat} times, direct and tunnel alternating, after a warm-up");
Console.WriteLine();

var direct = new PathResults("direct veth", bench.DirectB);
var tunnel = new PathResults(options.Offload ? "userspace GRE" : "GRE no offload", bench.InnerB);
var udpTunnel = new PathResults(options.Offload ? "GRE in UDP" : "GRE/UDP no offl.", bench.UdpInnerB);
var paths = new[] { direct, tunnel, udpTunnel };
foreach (var path in paths)
{
    _ = await Measure.TcpThroughputAsync(bench, path.Target, 1, TimeSpan.FromSeconds(1));
    Measure.UdpRoundTrips(bench, path.Target, 1000, options.Payload);
}

var gcBefore = GC.CollectionCount(0);
for (var run = 0; run < options.Repeat; run++)
{
    foreach (var path in paths)
    {
        var (one, oneCpu) = await Measure.TcpThroughputAsync(bench, path.Target, 1, TimeSpan.FromSeconds(options.Seconds));
        var (many, manyCpu) = await Measure.TcpThroughputAsync(bench, path.Target, options.Streams, TimeSpan.FromSeconds(options.Seconds));
        path.Throughput.Add(one);
        path.ThroughputStreams.Add(many);
        path.Cpu.Add(oneCpu);
        path.CpuStreams.Add(manyCpu);
        path.RoundTrips.AddRange(Measure.UdpRoundTrips(bench, path.Target, options.RoundTrips, options.Payload));
    }
}

var gcRuns = GC.CollectionCount(0) - gcBefore;
var streams = $"{options.Streams} streams";
Console.WriteLine($"{"path",-16} {"1 stream Mbit/s",16} {streams + " Mbit/s",16} {"RTT p50 µs",11} {"p99 µs",9} {"p99.9 µs",9} {"CPU s/GB 1, " + options.Streams,16}");
foreach (var path in paths)
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{path.Name,-16} {PathResults.Median(path.Throughput),16:0} {PathResults.Median(path.ThroughputStreams),16:0} {path.Percentile(0.50),11:0.0} {path.Percentile(0.99),9:0.0} {path.Percentile(0.999),9:0.0} {PathResults.Median(path.Cpu),8:0.00} {PathResults.Median(path.CpuStreams),7:0.00}"));
}

// Both cores busy on every path: what each gigabyte costs in CPU bounds the ratio the tunnel can reach on this machine.
Console.WriteLine("CPU s/GB: busy CPU time of the whole machine (/proc/stat, all cores) per gigabyte received, median");

Console.WriteLine();
foreach (var path in new[] { tunnel, udpTunnel })
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{path.Name}/direct: 1 stream {PathResults.Median(path.Throughput) / PathResults.Median(direct.Throughput):0.00}x, " +
        $"{streams} {PathResults.Median(path.ThroughputStreams) / PathResults.Median(direct.ThroughputStreams):0.00}x, " +
        $"RTT p50 +{path.Percentile(0.5) - direct.Percentile(0.5):0.0} µs, p99 +{path.Percentile(0.99) - direct.Percentile(0.99):0.0} µs"));
}

Console.WriteLine("runs (Mbit/s), 1 stream: " + string.Join("; ", paths.Select(p => p.Name + " " + PathResults.List(p.Throughput))));
Console.WriteLine($"runs (Mbit/s), {streams}: " + string.Join("; ", paths.Select(p => p.Name + " " + PathResults.List(p.ThroughputStreams))));
Console.WriteLine($"load average after: {LoadAverage()}; gen0 collections in this process during the runs: {gcRuns}");
var tunnels = new[] { ("GRE A", bench.TunnelA), ("GRE B", bench.TunnelB), ("GRE in UDP A", bench.UdpTunnelA), ("GRE in UDP B", bench.UdpTunnelB) };
foreach (var (name, t) in tunnels)
{
    var c = t.Counters;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name}: offloads 0x{t.Offloads:x}; {c}; packets per TUN read {(double)c.TxPackets / Math.Max(1, t.TunCalls.Reads):0.0}, per write {(double)c.RxPackets / Math.Max(1, t.TunCalls.Writes):0.0}"));
}

var dropped = tunnels.Sum(t => t.Item2.Counters.RxDropped + t.Item2.Counters.TxErrors);
foreach (var (_, t) in tunnels)
{
    await t.DisposeAsync();
}

Console.WriteLine("bytes the packet loops allocated (tx, rx): " + string.Join(", ", tunnels.Select(t => $"{t.Item1} {t.Item2.LoopAllocations}")));
return dropped == 0 ? 0 : 1;

static string LoadAverage() => File.ReadAllText("/proc/loadavg").Split(' ').Take(3) is var l ? string.Join(' ', l) : "";

namespace Switchover.Migration.Bench
{
    internal sealed record BenchOptions(int Seconds, int RoundTrips, bool OuterV6, int Payload, int Repeat, int Streams, bool Offload)
    {
        public static BenchOptions? Parse(string[] args)
        {
            var options = new BenchOptions(5, 20_000, false, 64, 3, 4, true);
            for (var i = 0; i + 1 < args.Length + 1; i += 2)
            {
                if (i >= args.Length)
                {
                    break;
                }

                if (i + 1 >= args.Length || !int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out var value) ||
                    (value <= 0 && args[i] != "--offload"))
                {
                    return null;
                }

                options = args[i] switch
                {
                    "--seconds" => options with { Seconds = value },
                    "--round-trips" => options with { RoundTrips = value },
                    "--outer" when value is 4 or 6 => options with { OuterV6 = value == 6 },
                    "--payload" when value <= 1400 => options with { Payload = value },
                    "--repeat" => options with { Repeat = value },
                    "--streams" when value <= 64 => options with { Streams = value },
                    "--offload" when value is 0 or 1 => options with { Offload = value == 1 },
                    _ => null,
                };
                if (options is null)
                {
                    return null;
                }
            }

            return options;
        }
    }

    internal sealed class PathResults(string name, IPAddress target)
    {
        public string Name { get; } = name;

        public IPAddress Target { get; } = target;

        public List<double> Throughput { get; } = [];

        public List<double> ThroughputStreams { get; } = [];

        /// <summary>Busy CPU seconds of the machine per gigabyte received, 1 stream and the streams.</summary>
        public List<double> Cpu { get; } = [];

        public List<double> CpuStreams { get; } = [];

        public List<double> RoundTrips { get; } = [];

        /// <summary>The median (the upper one of an even count).</summary>
        public static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);

        public static string List(List<double> values) => string.Join(", ", values.Select(t => t.ToString("0", CultureInfo.InvariantCulture)));

        public double Percentile(double p)
        {
            var sorted = RoundTrips.Order().ToList();
            return sorted[Math.Min(sorted.Count - 1, (int)(p * sorted.Count))];
        }
    }

    /// <summary>
    /// Hosts A and B on one veth link (198.51.100.1/.2 or 2001:db8:100::1/::2) and two userspace GRE tunnels between
    /// them with a key: GRE with inner addresses 203.0.113.1/.2 (a /25), GRE in UDP with 203.0.113.129/.130. The
    /// tunnels run in this process, as the agent runs them.
    /// </summary>
    internal sealed class BenchLab : IAsyncDisposable
    {
        private BenchLab(NetworkNamespace a, NetworkNamespace b, bool outerV6)
        {
            A = a;
            B = b;
            DirectB = IPAddress.Parse(outerV6 ? "2001:db8:100::2" : "198.51.100.2");
        }

        public NetworkNamespace A { get; }

        public NetworkNamespace B { get; }

        public IPAddress DirectB { get; }

        public IPAddress InnerB { get; } = IPAddress.Parse("203.0.113.2");

        public IPAddress UdpInnerB { get; } = IPAddress.Parse("203.0.113.130");

        public UserspaceGreTunnel TunnelA { get; private set; } = null!;

        public UserspaceGreTunnel TunnelB { get; private set; } = null!;

        public UserspaceGreTunnel UdpTunnelA { get; private set; } = null!;

        public UserspaceGreTunnel UdpTunnelB { get; private set; } = null!;

        public static async Task<BenchLab> CreateAsync(bool outerV6, bool offload)
        {
            var a = await NetworkNamespace.CreateAsync("so-ba", CancellationToken.None);
            var b = await NetworkNamespace.CreateAsync("so-bb", CancellationToken.None);
            var lab = new BenchLab(a, b, outerV6);
            try
            {
                await lab.SetUpAsync(outerV6, offload);
                return lab;
            }
            catch
            {
                await lab.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (TunnelA is not null)
            {
                await TunnelA.DisposeAsync();
            }

            if (TunnelB is not null)
            {
                await TunnelB.DisposeAsync();
            }

            if (UdpTunnelA is not null)
            {
                await UdpTunnelA.DisposeAsync();
            }

            if (UdpTunnelB is not null)
            {
                await UdpTunnelB.DisposeAsync();
            }

            await B.DisposeAsync();
            await A.DisposeAsync();
        }

        public override string ToString() =>
            $"veth {TunnelA.Options.Local} <-> {TunnelA.Options.Remote}, tunnel {TunnelA.Options.Name} key {TunnelA.Options.Key} mtu {TunnelA.Options.EffectiveMtu}";

        private async Task SetUpAsync(bool outerV6, bool offload)
        {
            await A.RunAsync("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", B.Name], CancellationToken.None);
            foreach (var (ns, host) in new[] { (A, 1), (B, 2) })
            {
                await ns.RunAsync("ip", ["addr", "add", $"198.51.100.{host}/24", "dev", "eth0"], CancellationToken.None);
                await ns.RunAsync("ip", ["-6", "addr", "add", $"2001:db8:100::{host}/64", "dev", "eth0", "nodad"], CancellationToken.None);
                await ns.RunAsync("ip", ["link", "set", "eth0", "up"], CancellationToken.None);
            }

            var localA = IPAddress.Parse(outerV6 ? "2001:db8:100::1" : "198.51.100.1");
            TunnelA = await UserspaceGreTunnel.StartAsync(new TunnelOptions
            {
                Name = "gre1", Local = localA, Remote = DirectB, Key = 1, NetworkNamespace = A.Name, DisableOffload = !offload,
            }, CancellationToken.None);
            TunnelB = await UserspaceGreTunnel.StartAsync(new TunnelOptions
            {
                Name = "gre1", Local = DirectB, Remote = localA, Key = 1, NetworkNamespace = B.Name, DisableOffload = !offload,
            }, CancellationToken.None);
            UdpTunnelA = await UserspaceGreTunnel.StartAsync(TunnelA.Options with { Name = "gre2", Encapsulation = TunnelEncapsulation.GreInUdp },
                CancellationToken.None);
            UdpTunnelB = await UserspaceGreTunnel.StartAsync(TunnelB.Options with { Name = "gre2", Encapsulation = TunnelEncapsulation.GreInUdp },
                CancellationToken.None);
            await A.RunAsync("ip", ["addr", "add", "203.0.113.1/25", "dev", "gre1"], CancellationToken.None);
            await B.RunAsync("ip", ["addr", "add", "203.0.113.2/25", "dev", "gre1"], CancellationToken.None);
            await A.RunAsync("ip", ["addr", "add", "203.0.113.129/25", "dev", "gre2"], CancellationToken.None);
            await B.RunAsync("ip", ["addr", "add", "203.0.113.130/25", "dev", "gre2"], CancellationToken.None);
            await Task.Delay(500); // carrier on the veth pair
        }
    }

    internal static class Measure
    {
        /// <summary>
        /// <paramref name="streams"/> TCP streams from A to <paramref name="target"/> in B for <paramref name="duration"/>;
        /// Mbit/s received in total, counted from the moment every stream has delivered its first bytes, and the busy CPU
        /// seconds of the machine per gigabyte in the same window.
        /// </summary>
        public static async Task<(double Mbits, double CpuPerGigabyte)> TcpThroughputAsync(BenchLab lab, IPAddress target, int streams, TimeSpan duration)
        {
            using var listener = lab.B.CreateSocket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(target, 0));
            listener.Listen(streams);
            var clients = new List<Socket>();
            var servers = new List<Socket>();
            try
            {
                for (var i = 0; i < streams; i++)
                {
                    var client = lab.A.CreateSocket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    clients.Add(client);
                    await client.ConnectAsync(listener.LocalEndPoint!);
                    var server = await listener.AcceptAsync();
                    servers.Add(server);

                    // A path that stops carrying data ends the run with an error instead of hanging it.
                    client.SendTimeout = 10_000;
                    server.ReceiveTimeout = 30_000;
                }

                long received = 0;
                var started = 0;
                var receivers = servers.Select(server => new Thread(() =>
                {
                    var buffer = new byte[256 * 1024];
                    var first = true;
                    int n;
                    while ((n = server.Receive(buffer)) > 0)
                    {
                        if (first)
                        {
                            first = false;
                            Interlocked.Increment(ref started);
                        }

                        Interlocked.Add(ref received, n);
                    }
                }) { Name = "bench receiver" }).ToList();
                var stop = 0;
                var senders = clients.Select(client => new Thread(() =>
                {
                    var chunk = new byte[128 * 1024];
                    while (Volatile.Read(ref stop) == 0)
                    {
                        client.Send(chunk);
                    }

                    client.Shutdown(SocketShutdown.Send);
                }) { Name = "bench sender" }).ToList();
                receivers.ForEach(t => t.Start());
                senders.ForEach(t => t.Start());

                var wait = Stopwatch.StartNew();
                while (Volatile.Read(ref started) < streams && wait.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Sleep(1);
                }

                var from = Interlocked.Read(ref received);
                var busy = BusyCpuSeconds();
                var clock = Stopwatch.StartNew();
                await Task.Delay(duration);
                var bytes = Interlocked.Read(ref received) - from;
                var elapsed = clock.Elapsed;
                busy = BusyCpuSeconds() - busy;
                Volatile.Write(ref stop, 1);
                senders.ForEach(t => t.Join(TimeSpan.FromSeconds(30)));
                receivers.ForEach(t => t.Join(TimeSpan.FromSeconds(30)));
                return (bytes * 8 / elapsed.TotalSeconds / 1e6, busy / (bytes / 1e9));
            }
            finally
            {
                clients.ForEach(c => c.Dispose());
                servers.ForEach(c => c.Dispose());
            }
        }

        /// <summary>CPU time of all cores not idle (nor waiting for I/O) since boot: the first line of /proc/stat, at USER_HZ 100.</summary>
        private static double BusyCpuSeconds()
        {
            var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
                .Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray();
            return (fields.Sum() - fields[3] - fields[4]) / 100.0;
        }

        /// <summary>Round trips of one datagram from A to an echo in B and back, one at a time; microseconds each.</summary>
        public static List<double> UdpRoundTrips(BenchLab lab, IPAddress target, int count, int payload)
        {
            var any = target.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any;
            using var echo = lab.B.CreateSocket(target.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            echo.Bind(new IPEndPoint(target, 0));
            using var client = lab.A.CreateSocket(target.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            client.Connect(echo.LocalEndPoint!);
            client.ReceiveTimeout = 1000;
            using var stop = new CancellationTokenSource();
            var server = new Thread(() =>
            {
                var buffer = new byte[2048];
                EndPoint from = new IPEndPoint(any, 0);
                echo.ReceiveTimeout = 200;
                while (!stop.IsCancellationRequested)
                {
                    try
                    {
                        var n = echo.ReceiveFrom(buffer, ref from);
                        echo.SendTo(buffer.AsSpan(0, n), from);
                    }
                    catch (SocketException)
                    {
                        // Timeout: look at the stop flag again.
                    }
                }
            }) { Name = "bench echo" };
            server.Start();

            var results = new List<double>(count);
            var data = new byte[payload];
            var reply = new byte[2048];
            var total = Stopwatch.StartNew();
            for (var i = 0; i < count && total.Elapsed < TimeSpan.FromSeconds(60); i++)
            {
                var start = Stopwatch.GetTimestamp();
                client.Send(data);
                try
                {
                    client.Receive(reply);
                }
                catch (SocketException)
                {
                    continue; // Lost: not a round trip.
                }

                results.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }

            stop.Cancel();
            server.Join();
            return results;
        }
    }
}
