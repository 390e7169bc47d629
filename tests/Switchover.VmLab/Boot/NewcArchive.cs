using System.Globalization;
using System.Text;

namespace Switchover.VmLab.Boot;

/// <summary>
/// Writes a cpio archive in the "newc" format, the one the kernel unpacks as an initramfs
/// (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than by cpio(1) so that device
/// nodes need no root and the archive is the same bytes for the same inputs (mtime 0, inode numbers in order).
/// Parent directories are added on first use; paths are relative to the archive's root, without a leading slash.
/// </summary>
internal sealed class NewcArchive
{
    private const string Magic = "070701";
    private const string TrailerName = "TRAILER!!!";
    private const int TypeDirectory = 0x4000;       // S_IFDIR  0040000
    private const int TypeRegular = 0x8000;         // S_IFREG  0100000
    private const int TypeSymlink = 0xA000;         // S_IFLNK  0120000
    private const int TypeCharacterDevice = 0x2000; // S_IFCHR  0020000

    internal const int Executable = 0b111_101_101;  // 0755
    internal const int Readable = 0b110_100_100;    // 0644

    private readonly Stream _output;
    private readonly HashSet<string> _paths = new(StringComparer.Ordinal);
    private int _inode;
    private long _position;
    private bool _finished;

    public NewcArchive(Stream output) => _output = output;

    public void AddDirectory(string path, int permissions = Executable)
    {
        path = Normalize(path);
        if (path.Length == 0 || _paths.Contains(path))
        {
            return;
        }

        AddParents(path);
        _paths.Add(path);
        WriteEntry(path, TypeDirectory | permissions, nlink: 2, ReadOnlySpan<byte>.Empty);
    }

    public void AddFile(string path, ReadOnlySpan<byte> content, int permissions = Readable)
    {
        path = AddNew(path);
        WriteEntry(path, TypeRegular | permissions, nlink: 1, content);
    }

    public void AddSymlink(string path, string target)
    {
        path = AddNew(path);
        WriteEntry(path, TypeSymlink | 0b111_111_111, nlink: 1, Encoding.UTF8.GetBytes(target));
    }

    public void AddCharacterDevice(string path, int major, int minor, int permissions = 0b110_000_000)
    {
        path = AddNew(path);
        WriteEntry(path, TypeCharacterDevice | permissions, nlink: 1, ReadOnlySpan<byte>.Empty, major, minor);
    }

    /// <summary>Writes the trailer; the archive is complete after this.</summary>
    public void Finish()
    {
        if (_finished)
        {
            return;
        }

        WriteHeader(TrailerName, mode: 0, nlink: 1, size: 0, inode: 0, 0, 0);
        _output.Flush();
        _finished = true;
    }

    private string AddNew(string path)
    {
        path = Normalize(path);
        if (path.Length == 0)
        {
            throw new ArgumentException("An initramfs entry needs a name.", nameof(path));
        }

        if (!_paths.Add(path))
        {
            throw new ArgumentException($"The initramfs already has an entry '{path}'.", nameof(path));
        }

        AddParents(path);
        return path;
    }

    private void AddParents(string path)
    {
        var slash = path.LastIndexOf('/');
        if (slash > 0)
        {
            AddDirectory(path[..slash]);
        }
    }

    private static string Normalize(string path) => path.Trim('/');

    private void WriteEntry(string path, int mode, int nlink, ReadOnlySpan<byte> content, int rdevMajor = 0, int rdevMinor = 0)
    {
        if (_finished)
        {
            throw new InvalidOperationException("The initramfs archive is already finished.");
        }

        WriteHeader(path, mode, nlink, content.Length, ++_inode, rdevMajor, rdevMinor);
        Write(content);
        Pad();
    }

    private void WriteHeader(string name, int mode, int nlink, long size, int inode, int rdevMajor, int rdevMinor)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var header = new StringBuilder(110);
        header.Append(Magic);
        foreach (var field in new long[] { inode, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, nameBytes.Length, 0 })
        {
            header.Append(field.ToString("X8", CultureInfo.InvariantCulture));
        }

        Write(Encoding.ASCII.GetBytes(header.ToString()));
        Write(nameBytes);
        Pad();
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        _output.Write(bytes);
        _position += bytes.Length;
    }

    // Every header and every file's data start on a 4-byte boundary.
    private void Pad()
    {
        var padding = (int)((4 - (_position % 4)) % 4);
        Write(new byte[padding]);
    }
}
