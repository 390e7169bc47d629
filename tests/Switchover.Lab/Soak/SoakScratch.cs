using System.Globalization;
using Switchover.Processes;

namespace Switchover.Lab;

/// <summary>
/// The soak's host faults and where they live: a scratch directory with a small tmpfs for the namespace's state (so
/// it can be filled or remounted read-only) and the nft shims the generations are given as Switchover:NftPath.
/// Disposing lifts any fault, unmounts the tmpfs and deletes the directory; dispose it after the generations stopped.
/// </summary>
internal sealed class SoakScratch : IAsyncDisposable
{
    private const string Filler = "filler";
    private bool _readOnly;

    private SoakScratch(string path)
    {
        Path = path;
        StateRoot = System.IO.Path.Combine(path, "state");
    }

    public string Path { get; }

    /// <summary>The state root of the soak's namespace, a tmpfs of its own.</summary>
    public string StateRoot { get; }

    public static async Task<SoakScratch> CreateAsync(CancellationToken cancellationToken)
    {
        var scratch = new SoakScratch(Directory.CreateTempSubdirectory("switchover-soak-").FullName);
        Directory.CreateDirectory(scratch.StateRoot);
        try
        {
            // In this process's mount namespace; the generations (ip netns exec) see it through mount propagation.
            await OnHostAsync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "switchover-soak", scratch.StateRoot], cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Directory.Delete(scratch.Path, recursive: true);
            throw;
        }

        return scratch;
    }

    public async Task MakeReadOnlyAsync(CancellationToken cancellationToken)
    {
        await OnHostAsync("mount", ["-o", "remount,ro", StateRoot], cancellationToken).ConfigureAwait(false);
        _readOnly = true;
    }

    /// <summary>Fills the tmpfs until a write fails; returns the bytes left free (less than a page when it worked).</summary>
    public async Task<long> FillAsync(CancellationToken cancellationToken)
    {
        // dd ends with "No space left on device" (exit 1) once the tmpfs is full: that is the point.
        await CommandRunner.Instance.TryRunAsync(new Command("dd", ["if=/dev/zero", $"of={System.IO.Path.Combine(StateRoot, Filler)}", "bs=4k"]), cancellationToken).ConfigureAwait(false);
        return new DriveInfo(StateRoot).AvailableFreeSpace;
    }

    /// <summary>Lifts the state directory's fault, if one is on: writable again, the filler gone.</summary>
    public async Task LiftAsync(CancellationToken cancellationToken)
    {
        if (_readOnly)
        {
            await OnHostAsync("mount", ["-o", "remount,rw", StateRoot], cancellationToken).ConfigureAwait(false);
            _readOnly = false;
        }

        File.Delete(System.IO.Path.Combine(StateRoot, Filler));
    }

    /// <summary>
    /// Writes an nft shim for one generation: checks (<c>--check</c>) go to the real nft, the first
    /// <paramref name="passChanges"/> changes too, and every later one is refused (after reading its script, as the
    /// real nft does) or hangs (until the generation's nft client kills it at its timeout). Returns its path.
    /// </summary>
    public string WriteNftShim(string generation, bool hang, int passChanges)
    {
        var shim = System.IO.Path.Combine(Path, $"nft-{generation}");
        var count = shim + ".count";
        var fault = hang ? "exec sleep 60" : "cat > /dev/null\necho 'Error: injected: nft refuses' >&2\nexit 1";
        File.WriteAllText(shim, string.Create(CultureInfo.InvariantCulture,
            $"#!/bin/sh\n[ \"$1\" = --check ] && exec nft \"$@\"\nn=$(cat {count} 2>/dev/null || echo 0)\necho $((n + 1)) > {count}\n" +
            $"if [ \"$n\" -ge {passChanges} ]; then\n{fault}\nfi\nexec nft \"$@\"\n"));
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        return shim;
    }

    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await LiftAsync(timeout.Token).ConfigureAwait(false);
            await OnHostAsync("umount", [StateRoot], timeout.Token).ConfigureAwait(false);
            Directory.Delete(Path, recursive: true);
        }
#pragma warning disable CA1031 // Cleanup says what it left and never hides the failure that is unwinding.
        catch (Exception e)
#pragma warning restore CA1031
        {
            await Console.Error.WriteLineAsync($"soak: could not remove {Path} (tmpfs on {StateRoot}): {e.Message}. Remove it by hand: umount {StateRoot}; rm -r {Path}");
        }
    }

    private static async Task OnHostAsync(string program, string[] arguments, CancellationToken cancellationToken) =>
        await CommandRunner.Instance.RunAsync(new Command(program, arguments), cancellationToken).ConfigureAwait(false);
}
