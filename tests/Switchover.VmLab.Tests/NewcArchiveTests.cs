using System.Diagnostics;
using System.Text;
using Switchover.VmLab.Boot;

namespace Switchover.VmLab.Tests;

public sealed class NewcArchiveTests
{
    [Fact]
    public void A_file_entry_has_the_newc_header_name_and_data_each_padded_to_four_bytes()
    {
        using var output = new MemoryStream();
        var archive = new NewcArchive(output);

        archive.AddFile("init", "hi"u8, NewcArchive.Executable);
        archive.Finish();

        var text = Encoding.ASCII.GetString(output.ToArray());
        // magic, ino 1, mode 0100755, uid, gid, nlink 1, mtime 0, size 2, dev 0:0, rdev 0:0, namesize 5, check 0
        const string header = "070701" + "00000001" + "000081ED" + "00000000" + "00000000" + "00000001" + "00000000" +
            "00000002" + "00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000";
        Assert.StartsWith(header + "init\0" + "\0" + "hi\0\0" + "070701", text, StringComparison.Ordinal);
        Assert.EndsWith("TRAILER!!!\0" + new string('\0', (4 - ((110 + 11) % 4)) % 4), text, StringComparison.Ordinal);
        Assert.Equal(0, output.Length % 4);
    }

    [Fact]
    public void Busybox_cpio_lists_every_entry_with_its_type_and_parents_first()
    {
        var path = Path.GetTempFileName();
        try
        {
            using (var file = File.Create(path))
            {
                var archive = new NewcArchive(file);
                archive.AddCharacterDevice("dev/console", 5, 1);
                archive.AddFile("vmlab/systemd/vmlab.target", "[Unit]\n"u8);
                archive.AddSymlink("bin/sh", "busybox");
                archive.Finish();
            }

            using var cpio = Process.Start(new ProcessStartInfo("busybox", ["cpio", "-t", "-v", "-F", path]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var listing = cpio.StandardOutput.ReadToEnd();
            cpio.WaitForExit();

            var entries = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (Type: l[0], Name: l.Split(' ').Last())).ToList();
            Assert.Equal(
                [('d', "dev"), ('c', "dev/console"), ('d', "vmlab"), ('d', "vmlab/systemd"), ('-', "vmlab/systemd/vmlab.target"), ('d', "bin"), ('l', "busybox")],
                entries);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void The_same_entry_twice_is_refused()
    {
        var archive = new NewcArchive(new MemoryStream());
        archive.AddFile("init", "a"u8);

        var error = Assert.Throws<ArgumentException>(() => archive.AddFile("/init", "b"u8));

        Assert.Contains("'init'", error.Message, StringComparison.Ordinal);
    }
}
