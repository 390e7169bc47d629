using System.Globalization;
using System.Runtime.InteropServices;
using System.ComponentModel;
using System.Diagnostics;

namespace Switchover.Load.Report;

/// <summary>What the numbers were measured on.</summary>
internal sealed record MachineInfo(IReadOnlyList<(string Name, string Value)> Facts)
{
    public static async Task<MachineInfo> CollectAsync(CancellationToken cancellationToken)
    {
        var facts = new List<(string, string)>();
        var cpuinfo = ReadOrEmpty("/proc/cpuinfo");
        var model = cpuinfo.Split('\n').FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
        facts.Add(("CPU", $"{model}; {Environment.ProcessorCount} logical cores available to this process"));
        var memory = ReadOrEmpty("/proc/meminfo").Split('\n').FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        if (memory is not null && long.TryParse(memory.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture, out var kib))
        {
            facts.Add(("Memory", string.Create(CultureInfo.InvariantCulture, $"{kib / 1024.0 / 1024.0:0.0} GiB")));
        }

        facts.Add(("Kernel", (await TryAsync("uname", ["-srm"], cancellationToken)).Trim()));
        var osRelease = ReadOrEmpty("/etc/os-release").Split('\n').FirstOrDefault(l => l.StartsWith("PRETTY_NAME=", StringComparison.Ordinal));
        facts.Add(("OS", osRelease?["PRETTY_NAME=".Length..].Trim('"') ?? "unknown"));
        facts.Add((".NET", RuntimeInformation.FrameworkDescription + " " + RuntimeInformation.RuntimeIdentifier));
        facts.Add(("nftables", (await TryAsync("nft", ["--version"], cancellationToken)).Trim()));
        facts.Add(("conntrack", (await TryAsync("conntrack", ["--version"], cancellationToken)).Trim()));
        facts.Add(("wrk", (await TryAsync("wrk", ["-v"], cancellationToken)).Split('\n')[0].Trim()));
        facts.Add(("Virtualization", (await TryAsync("systemd-detect-virt", [], cancellationToken)).Trim() is { Length: > 0 } virt ? virt : "unknown"));
        facts.Add(("Load average at start", ReadOrEmpty("/proc/loadavg").Trim()));
        return new MachineInfo(facts);
    }

    public static string LoadAverage() => ReadOrEmpty("/proc/loadavg").Trim();

    public static async Task<string> GitDescriptionAsync(string repository, CancellationToken cancellationToken)
    {
        var commit = (await TryAsync("git", ["-C", repository, "rev-parse", "--short", "HEAD"], cancellationToken)).Trim();
        var dirty = (await TryAsync("git", ["-C", repository, "status", "--porcelain", "--untracked-files=no"], cancellationToken)).Trim();
        return commit.Length == 0 ? "unknown" : commit + (dirty.Length > 0 ? " (with uncommitted changes)" : string.Empty);
    }

    private static string ReadOrEmpty(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return string.Empty;
        }
    }

    private static async Task<string> TryAsync(string fileName, string[] arguments, CancellationToken cancellationToken)
    {
        var startInfo = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        try
        {
            using var process = Process.Start(startInfo)!;
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
            var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
            await process.WaitForExitAsync(timeout.Token);
            var output = await stdout;
            return output.Length > 0 ? output : await stderr;
        }
        catch (Win32Exception)
        {
            return "not installed";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return "no answer within 10 s";
        }
    }
}
