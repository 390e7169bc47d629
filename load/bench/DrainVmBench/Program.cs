using System.Globalization;
using Switchover.VmLab;

// DrainVmBench: the load suite's kernel scenario, idle part only (drain polls and a handoff per count of idle
// connections, against three plain handoffs), inside a VM where the open-file limit can be raised. See README.md.
var counts = args.Length == 0 ? ["10000", "50000"] : args;
if (counts.Any(c => !int.TryParse(c, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n <= 0 || n > 56_000))
{
    Console.Error.WriteLine("usage: DrainVmBench [IDLE_CONNECTIONS ...] (default 10000 50000; at most 56000: two client addresses' ephemeral ports)");
    return 2;
}

var configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name;
var suite = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "Switchover.Load", configuration, "Switchover.Load.dll"));
if (!File.Exists(suite))
{
    Console.Error.WriteLine($"{suite} is missing: dotnet build -c Release load/bench/DrainVmBench builds it.");
    return 1;
}

// 6 GiB: 100,000 sockets and their buffers, the suite and two generations, with room to spare.
await using var vm = await VirtualMachine.StartAsync(new VmOptions { Init = VmInit.Small, MemoryMiB = 6144, CommandTimeout = TimeSpan.FromMinutes(60) });
Console.WriteLine($"DrainVmBench: idle connections {string.Join(", ", counts)}; VM kernel {vm.KernelRelease} under {vm.Accelerator.Name}, " +
                  $"booted in {vm.BootTime.TotalSeconds:0.0} s");
var output = Path.Combine(VirtualMachine.GuestShareDirectory, "drain");
var run = await vm.RunAsync(
    $"sysctl -q -w net.netfilter.nf_conntrack_max=262144 2>/dev/null; echo \"conntrack max $(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null)\"; " +
    $"dotnet {suite} --scenarios kernel --kernel-parts idle --kernel-idle {string.Join(' ', counts)} --max-minutes 50 --output {output}",
    TimeSpan.FromMinutes(55));
Console.WriteLine(run.StandardOutput);
var report = Path.Combine(vm.HostShareDirectory, "drain", "report.md");
if (File.Exists(report))
{
    var text = await File.ReadAllTextAsync(report);
    var start = text.IndexOf("## Kernel interfaces", StringComparison.Ordinal);
    Console.WriteLine(start >= 0 ? text[start..] : text);
}

if (!run.Succeeded)
{
    Console.Error.WriteLine(run.ToString());
    return 1;
}

return 0;
