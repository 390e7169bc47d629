using System.Globalization;
using System.Text.Json;
using Switchover.VmLab;

// KernelGreVmBench: one TCP stream (iperf3) through the kernel GRE dataplane against the direct veth path under it,
// both in the same VM, alternating, the median of --repeat runs each. See README.md.
var options = Options.Parse(args);
if (options is null)
{
    Console.Error.WriteLine("usage: KernelGreVmBench [--seconds N (5)] [--repeat N (3)] [--outer 4|6 (4)]");
    return 2;
}

var cli = Path.Combine(AppContext.BaseDirectory, "..", "..", "Switchover.Cli", new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name, "switchover.dll");
cli = Path.GetFullPath(cli);
if (!File.Exists(cli))
{
    Console.Error.WriteLine($"{cli} is missing: dotnet build -c Release load/bench/KernelGreVmBench builds it.");
    return 1;
}

await using var vm = await VirtualMachine.StartAsync(new VmOptions { Init = VmInit.Small });
Console.WriteLine($"KernelGreVmBench: {options}; VM kernel {vm.KernelRelease} under {vm.Accelerator.Name}, booted in {vm.BootTime.TotalSeconds:0.0} s");
var (a, b, innerB) = options.OuterV6 ? ("2001:db8:100::1", "2001:db8:100::2", "203.0.113.2") : ("198.51.100.1", "198.51.100.2", "203.0.113.2");
var g = VirtualMachine.GuestShareDirectory;
var setup = await vm.RunAsync($"""
    set -e
    ip netns add kb-a; ip netns add kb-b
    ip -n kb-a link add eth0 type veth peer name eth0 netns kb-b
    ip -n kb-a addr add 198.51.100.1/24 dev eth0; ip -n kb-a addr add 2001:db8:100::1/64 dev eth0 nodad
    ip -n kb-b addr add 198.51.100.2/24 dev eth0; ip -n kb-b addr add 2001:db8:100::2/64 dev eth0 nodad
    for ns in kb-a kb-b; do ip -n $ns link set eth0 up; ip -n $ns link set lo up; done
    setsid ip netns exec kb-a dotnet {cli} tunnel run --name kb0 --local {a} --remote {b} --key 42 --dataplane kernel --socket /tmp/kb-a.sock >{g}/agent-a.log 2>&1 &
    echo $! > /tmp/kb-agents.pid
    setsid ip netns exec kb-b dotnet {cli} tunnel run --name kb0 --local {b} --remote {a} --key 42 --dataplane kernel --socket /tmp/kb-b.sock >{g}/agent-b.log 2>&1 &
    echo $! >> /tmp/kb-agents.pid
    for i in $(seq 900); do grep -q 'tunnel kb0 up' {g}/agent-a.log && grep -q 'tunnel kb0 up' {g}/agent-b.log && break; sleep 0.2; done
    ip -n kb-a addr add 203.0.113.1/24 dev kb0; ip -n kb-b addr add 203.0.113.2/24 dev kb0
    ip -n kb-a -d link show dev kb0 | grep -o 'gre remote [^ ]*'
    """, TimeSpan.FromMinutes(5));
try
{
    setup.EnsureSuccess();
    Console.WriteLine($"tunnel: {setup.StandardOutput.Trim()}, mtu as the product sets it");
    var direct = new List<double>();
    var tunnel = new List<double>();
    for (var run = 1; run <= options.Repeat; run++)
    {
        direct.Add(await MeasureAsync(vm, b, $"direct-{run}"));
        tunnel.Add(await MeasureAsync(vm, innerB, $"tunnel-{run}"));
        Console.WriteLine($"run {run}: direct {direct[^1]:0} Mbit/s, kernel GRE {tunnel[^1]:0} Mbit/s");
    }

    var (d, t) = (Median(direct), Median(tunnel));
    Console.WriteLine();
    Console.WriteLine("| path (one TCP stream, iperf3, in the VM) | Mbit/s (median) |");
    Console.WriteLine("|---|---|");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| direct veth | {d:0} |"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| kernel GRE (IPv{(options.OuterV6 ? 6 : 4)} outer, key) over that veth | {t:0} |"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| ratio kernel GRE / direct | {t / d:0.00} |"));
    return 0;
}
finally
{
    // The agents remove their links and filters on SIGTERM; the VM goes away with everything else.
    await vm.RunAsync("kill -TERM $(cat /tmp/kb-agents.pid) 2>/dev/null; sleep 5; ip netns del kb-a; ip netns del kb-b; true", TimeSpan.FromMinutes(1));
}

// One iperf3 run to the address (a fresh server each time: -1 serves one test and exits).
async Task<double> MeasureAsync(VirtualMachine vm, string address, string name)
{
    var result = await vm.RunAsync(
        $"ip netns exec kb-b iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.5; ip netns exec kb-a iperf3 -c {address} -t {options.Seconds} -J > {g}/{name}.json",
        TimeSpan.FromSeconds(options.Seconds + 90));
    result.EnsureSuccess();
    using var json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(vm.HostShareDirectory, name + ".json")));
    return json.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e6;
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
}

internal sealed record Options(int Seconds, int Repeat, bool OuterV6)
{
    public static Options? Parse(string[] args)
    {
        var options = new Options(5, 3, false);
        for (var i = 0; i < args.Length; i += 2)
        {
            if (i + 1 >= args.Length || !int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value <= 0)
            {
                return null;
            }

            options = args[i] switch
            {
                "--seconds" => options with { Seconds = value },
                "--repeat" => options with { Repeat = value },
                "--outer" when value is 4 or 6 => options with { OuterV6 = value == 6 },
                _ => null,
            };
            if (options is null)
            {
                return null;
            }
        }

        return options;
    }

    public override string ToString() => $"{Seconds} s per run, {Repeat} runs each, IPv{(OuterV6 ? 6 : 4)} outer";
}
