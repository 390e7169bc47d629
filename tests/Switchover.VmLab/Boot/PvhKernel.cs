using System.Buffers.Binary;
using System.IO.Compression;

namespace Switchover.VmLab.Boot;

/// <summary>
/// Takes the ELF vmlinux out of a bzImage so that qemu can start it at its PVH entry point (CONFIG_PVH, which Debian
/// enables): that skips the real-mode setup and, above all, the guest decompressing ~65 MB of xz under TCG, which
/// took ~4 s of a ~10 s boot. The payload's place is in the boot protocol header (payload_offset at 0x248,
/// payload_length at 0x24c, relative to the protected-mode code at (setup_sects + 1) * 512; Documentation/arch/x86/boot.rst).
/// </summary>
internal static class PvhKernel
{
    private const int XenElfNotePhys32Entry = 18;

    /// <summary>Writes the vmlinux to <paramref name="destination"/>; false (with the reason) if this image does not allow it.</summary>
    public static async Task<(bool Extracted, string Reason)> TryExtractPvhAsync(string bzImage, string destination, CancellationToken cancellationToken)
    {
        var image = await File.ReadAllBytesAsync(bzImage, cancellationToken).ConfigureAwait(false);
        if (image.Length < 0x250 || BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x202)) != 0x53726448) // "HdrS"
        {
            return (false, $"{bzImage} is not a bzImage (no HdrS boot header)");
        }

        var setupSectors = image[0x1f1] == 0 ? 4 : image[0x1f1];
        var start = ((setupSectors + 1) * 512) + (int)BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x248));
        var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x24c));
        if (start <= 0 || length <= 0 || start + length > image.Length)
        {
            return (false, $"{bzImage}: the payload at {start}+{length} lies outside the file");
        }

        var payload = image.AsMemory(start, length);
        var span = payload.Span;
        await using (var output = File.Create(destination))
        {
            if (span.StartsWith((byte[])[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]))
            {
                // xz stops at the end of its stream; the kernel appends the uncompressed size after it.
                using var input = new MemoryStream(payload.ToArray());
                await HostCommand.RunAsync("xz", ["--decompress", "--stdout", "--single-stream"], TimeSpan.FromMinutes(2), cancellationToken, input, output)
                    .ConfigureAwait(false);
            }
            else if (span.StartsWith((byte[])[0x1F, 0x8B]))
            {
                await using var gzip = new GZipStream(new MemoryStream(payload.ToArray()), CompressionMode.Decompress);
                await gzip.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                return (false, $"{bzImage}: the payload is compressed in a format the lab does not unpack (neither xz nor gzip)");
            }
        }

        var vmlinux = await File.ReadAllBytesAsync(destination, cancellationToken).ConfigureAwait(false);
        if (!HasPvhEntry(vmlinux))
        {
            File.Delete(destination);
            return (false, $"{bzImage}: the vmlinux inside has no PVH entry note (the kernel lacks CONFIG_PVH)");
        }

        return (true, "PVH entry of the vmlinux extracted from " + bzImage);
    }

    /// <summary>Whether a 64-bit little-endian ELF has the Xen note XEN_ELFNOTE_PHYS32_ENTRY that qemu needs for PVH.</summary>
    internal static bool HasPvhEntry(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || !elf.StartsWith((byte[])[0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1]))
        {
            return false;
        }

        var programHeaders = (long)BinaryPrimitives.ReadUInt64LittleEndian(elf[0x20..]);
        var entrySize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x36..]);
        var count = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x38..]);
        for (var i = 0; i < count; i++)
        {
            var header = elf[(int)(programHeaders + (i * entrySize))..];
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != 4) // PT_NOTE
            {
                continue;
            }

            var offset = (int)BinaryPrimitives.ReadUInt64LittleEndian(header[0x08..]);
            var size = (int)BinaryPrimitives.ReadUInt64LittleEndian(header[0x20..]);
            var notes = elf.Slice(offset, size);
            while (notes.Length >= 12)
            {
                var nameSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(notes);
                var descSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(notes[4..]);
                var type = BinaryPrimitives.ReadUInt32LittleEndian(notes[8..]);
                if (type == XenElfNotePhys32Entry && nameSize == 4 && notes[12..16].SequenceEqual("Xen\0"u8))
                {
                    return true;
                }

                var next = 12 + Align4(nameSize) + Align4(descSize);
                if (next > notes.Length)
                {
                    break;
                }

                notes = notes[next..];
            }
        }

        return false;
    }

    private static int Align4(int value) => (value + 3) & ~3;
}
