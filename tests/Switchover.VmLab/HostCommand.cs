using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace Switchover.VmLab;

/// <summary>A program the lab runs on the host to completion (depmod, xz, qemu --version): arguments as an array, bounded in time.</summary>
internal static class HostCommand
{
    public sealed record Result(int ExitCode, byte[] StandardOutput, string StandardError)
    {
        public string Text => Encoding.UTF8.GetString(StandardOutput);
    }

    /// <summary>Runs the program; throws <see cref="VmLabException"/> with the command, exit code and stderr unless it exits 0.</summary>
    public static async Task<Result> RunAsync(
        string fileName, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken,
        Stream? standardInput = null, Stream? standardOutput = null)
    {
        var result = await TryRunAsync(fileName, arguments, timeout, cancellationToken, standardInput, standardOutput).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new VmLabException(
                $"`{Render(fileName, arguments)}` exited with {result.ExitCode}: {result.StandardError.Trim()}");
        }

        return result;
    }

    public static async Task<Result> TryRunAsync(
        string fileName, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken,
        Stream? standardInput = null, Stream? standardOutput = null)
    {
        var startInfo = new ProcessStartInfo(fileName)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        using var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (Win32Exception e)
        {
            throw new VmLabException(
                $"Cannot run `{fileName}`: {e.Message}. Run .ci/prerequisites, which installs what the VM lab needs.", e);
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            var feed = FeedAsync(process, standardInput, deadline.Token);
            var output = standardOutput ?? new MemoryStream();
            var copyOut = process.StandardOutput.BaseStream.CopyToAsync(output, deadline.Token);
            var copyErr = process.StandardError.ReadToEndAsync(deadline.Token);
            await Task.WhenAll(feed, copyOut, copyErr).ConfigureAwait(false);
            await process.WaitForExitAsync(deadline.Token).ConfigureAwait(false);
            return new Result(process.ExitCode, output is MemoryStream memory ? memory.ToArray() : [], await copyErr.ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            process.Kill(entireProcessTree: true);
            throw new VmLabException($"`{Render(fileName, arguments)}` did not finish within {timeout.TotalSeconds:0} s; it was killed.");
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }

    private static async Task FeedAsync(Process process, Stream? input, CancellationToken cancellationToken)
    {
        try
        {
            if (input is not null)
            {
                await input.CopyToAsync(process.StandardInput.BaseStream, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (IOException)
        {
            // The program stopped reading (xz --single-stream stops at the end of the stream); its exit code tells.
        }
        finally
        {
            process.StandardInput.Close();
        }
    }

    internal static string Render(string fileName, IEnumerable<string> arguments) =>
        string.Join(' ', new[] { fileName }.Concat(arguments).Select(a => a.Contains(' ', StringComparison.Ordinal) ? $"'{a}'" : a));
}
