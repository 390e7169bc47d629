using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Win32.SafeHandles;
using Switchover.Interop;

namespace Switchover.State;

/// <summary>
/// The state directory of one namespace in one network namespace: <c>STATE_DIR/NAMESPACE@NETNS/{lock,state.json}</c>,
/// NETNS being the inode of the network namespace that holds the namespace's table (see <see cref="NetworkNamespaces"/>).
/// Every read-modify-write happens under an exclusive flock on the lock file.
/// </summary>
public sealed class StateStore
{
    public const string DefaultRoot = "/run/switchover";

    /// <summary>The state of <paramref name="name"/> in this process's network namespace.</summary>
    /// <param name="recovery">What to tell the user to do about a corrupt file. Default: the hosting namespace's cleanup.</param>
    public StateStore(string root, NamespaceName name, string? recovery = null)
        : this(root, name, NetworkNamespaces.Current, recovery)
    {
    }

    /// <summary>The state of <paramref name="name"/> in the network namespace <paramref name="networkNamespace"/> (an nsfs inode).</summary>
    public StateStore(string root, NamespaceName name, ulong networkNamespace, string? recovery = null)
    {
        _recovery = recovery ?? $"run 'switchover cleanup --namespace {name.Value} --force' to start the namespace afresh";
        Root = root;
        Name = name;
        NetworkNamespace = networkNamespace;
        Directory = Path.Combine(root, DirectoryName(name, networkNamespace));
    }

    private readonly string _recovery;

    public string Root { get; }

    public NamespaceName Name { get; }

    /// <summary>The inode of the network namespace whose table this state describes.</summary>
    public ulong NetworkNamespace { get; }

    /// <summary>The name of a namespace's directory under the state root: NAMESPACE@NETNS.</summary>
    public static string DirectoryName(NamespaceName name, ulong networkNamespace) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{name.Value}@{networkNamespace}");

    /// <summary>Reads a directory name written by <see cref="DirectoryName"/>; false for anything else under the root.</summary>
    public static bool TryParseDirectoryName(string directoryName, out NamespaceName name, out ulong networkNamespace)
    {
        name = null!;
        networkNamespace = 0;
        var at = directoryName.LastIndexOf('@');
        if (at <= 0 || NamespaceName.Validate(directoryName[..at]) is not null
            || !ulong.TryParse(directoryName.AsSpan(at + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out networkNamespace))
        {
            return false;
        }

        name = NamespaceName.Parse(directoryName[..at]);
        return true;
    }

    /// <summary>
    /// The namespaces with state under <paramref name="root"/>, each with the network namespace it belongs to.
    /// </summary>
    /// <exception cref="IOException">The root cannot be listed (DirectoryNotFoundException when absent).</exception>
    public static IReadOnlyList<(NamespaceName Name, ulong NetworkNamespace)> List(string root) =>
        [.. System.IO.Directory.EnumerateDirectories(root)
            .Select(d => TryParseDirectoryName(Path.GetFileName(d), out var name, out var netns) ? (name, netns) : default)
            .Where(e => e.name is not null)
            .OrderBy(e => e.name.Value, StringComparer.Ordinal)];

    /// <summary>
    /// Removes the state of namespaces whose network namespace no longer exists (its table went with it), each under
    /// its own lock. Best effort: what cannot be removed now is left for the next caller.
    /// </summary>
    /// <returns>The directories removed.</returns>
    /// <remarks>
    /// Loops over the directory names rather than <see cref="List"/>'s tuples and LINQ: every registration runs this,
    /// and those generics over value types would be JIT-compiled in each generation at its launch.
    /// </remarks>
    public static IReadOnlyList<string> RemoveGoneNetworkNamespaces(string root, Func<ulong, bool>? exists = null)
    {
        var removed = new List<string>();
        string[] directories;
        try
        {
            directories = System.IO.Directory.GetDirectories(root);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return removed;
        }

        var others = new List<StateStore>();
        foreach (var directory in directories)
        {
            if (TryParseDirectoryName(Path.GetFileName(directory), out var name, out var netns) && netns != NetworkNamespaces.Current)
            {
                others.Add(new StateStore(root, name, netns));
            }
        }

        if (others.Count == 0)
        {
            return removed;
        }

        // In List's order (by name), so that what is removed comes out in the same order.
        others.Sort(static (a, b) => string.CompareOrdinal(a.Name.Value, b.Name.Value) is var byName and not 0
            ? byName
            : a.NetworkNamespace.CompareTo(b.NetworkNamespace));
        if (exists is null)
        {
            var live = NetworkNamespaces.Live();
            exists = live.Contains;
        }

        foreach (var store in others)
        {
            if (exists(store.NetworkNamespace))
            {
                continue;
            }

            try
            {
                using var held = store.LockAsync(TimeSpan.Zero, CancellationToken.None).GetAwaiter().GetResult();
                held.DeleteNamespace();
                removed.Add(store.Directory);
            }
            catch (StateException)
            {
                // Locked (someone acts on it right now) or not ours to remove: the next caller tries again.
            }
        }

        return removed;
    }

    public string Directory { get; }

    public string StatePath => Path.Combine(Directory, "state.json");

    public string LockPath => Path.Combine(Directory, "lock");

    // internal for testing: runs between opening the lock file and locking it, where a concurrent delete can strike.
    internal Action? LockFileOpenedForTesting { get; set; }

    /// <summary>True when the namespace has a state directory (it may still be empty).</summary>
    public bool Exists => System.IO.Directory.Exists(Directory);

    /// <summary>
    /// Takes the namespace lock, creating the directory if needed. Waits up to <paramref name="timeout"/>:
    /// overlapping deploys are serialized here.
    /// </summary>
    public async Task<StateLock> LockAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var handle = await LockFileAsync(LockPath, CreateDirectory, () => LockFileOpenedForTesting?.Invoke(),
            "set Switchover:StateDirectory to a directory this user can write", timeout,
            () => new StateException($"Timed out after {timeout.TotalSeconds:0.#} s waiting for the namespace lock {LockPath}. " +
                "Another deploy of this namespace is in progress; retry when it has finished.")
            {
                IsLockTimeout = true,
            },
            cancellationToken).ConfigureAwait(false);
        return new StateLock(this, handle);
    }

    /// <summary>
    /// Takes an exclusive flock on <paramref name="path"/> (created if needed, after <paramref name="prepare"/>, e.g.
    /// its directory), waiting up to <paramref name="timeout"/>, then throws what <paramref name="timedOut"/> makes.
    /// <paramref name="opened"/> runs each time the file is open and not yet locked (tests race a deletion there);
    /// <paramref name="remedy"/> completes "Run as root, or ..." when the file cannot be opened.
    /// Whoever holds the lock may unlink the file (the last user of a directory removes it): a lock taken on a file
    /// that was unlinked meanwhile protects nothing, so it is taken again on the file the path names now.
    /// </summary>
    internal static async Task<SafeFileHandle> LockFileAsync(string path, Action prepare, Action opened, string remedy, TimeSpan timeout, Func<Exception> timedOut,
        CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            prepare();
            SafeFileHandle handle;
            try
            {
                handle = Libc.OpenLockFile(path);
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                throw new StateException($"Cannot open the lock file {path}: {e.Message}. Run as root, or {remedy}.", e);
            }

            opened();
            if (Libc.Flock(handle, Libc.LOCK_EX | Libc.LOCK_NB) == 0)
            {
                if (StillLinked(handle, path))
                {
                    return handle;
                }

                handle.Dispose();
                continue;
            }

            handle.Dispose();
            if (DateTime.UtcNow >= deadline)
            {
                throw timedOut();
            }

            await Task.Delay(25, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Reads the state without the lock (for status display). Returns null when there is none.</summary>
    public NamespaceState? ReadUnlocked() => ReadFile();

    private void CreateDirectory()
    {
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new StateException($"Cannot create the state directory {Directory}: {e.Message}. " +
                "Run as root, or set Switchover:StateDirectory to a directory this user can write.", e);
        }
    }

    private static bool StillLinked(SafeFileHandle handle, string path)
    {
        var held = Libc.FileIdentity(handle);
        var named = Libc.FileIdentity(path);
        return held is not null && held == named;
    }

    internal NamespaceState? ReadFile()
    {
        var state = ReadJson(StatePath, static bytes => StateJson.DeserializeState(bytes));
        if (state is not null && (state.Version != NamespaceState.CurrentVersion || state.Namespace != Name.Value || state.Generations is null))
        {
            throw Corrupt(StatePath, $"version {state.Version} / namespace '{state.Namespace}' does not match version {NamespaceState.CurrentVersion} / '{Name.Value}'", null);
        }

        return state;
    }

    internal void WriteFile(NamespaceState state) => WriteAtomically(StatePath, StateJson.Serialize(state));

    /// <summary>Reads a JSON file of this namespace's directory; null when it is absent or empty, <see cref="StateException"/> when corrupt.</summary>
    internal T? ReadJson<T>(string path, JsonTypeInfo<T> typeInfo)
        where T : class => ReadJson(path, bytes => JsonSerializer.Deserialize(bytes, typeInfo));

    /// <inheritdoc cref="ReadJson{T}(string, JsonTypeInfo{T})"/>
    /// <param name="deserialize">Reads the file's bytes: null for a JSON null, <see cref="JsonException"/> when they are not a <typeparamref name="T"/>.</param>
    internal T? ReadJson<T>(string path, Func<byte[], T?> deserialize)
        where T : class
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }

        if (bytes.Length == 0)
        {
            return null;
        }

        try
        {
            return deserialize(bytes) ?? throw new JsonException("the file holds null");
        }
        catch (JsonException e)
        {
            throw Corrupt(path, e.Message, e);
        }
    }

    /// <summary>Replaces a JSON file atomically: temporary file, fsync, rename.</summary>
    internal static void WriteJson<T>(string path, T value, JsonTypeInfo<T> typeInfo) =>
        WriteAtomically(path, JsonSerializer.SerializeToUtf8Bytes(value, typeInfo));

    /// <summary>Replaces a file atomically: temporary file, fsync, rename.</summary>
    internal static void WriteAtomically(string path, byte[] bytes)
    {
        var temp = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            TryDelete(temp);
            throw new StateException($"Cannot write the state file {path}: {e.Message}. " +
                "Run as root, or set Switchover:StateDirectory to a directory this user can write.", e);
        }
    }

    private StateException Corrupt(string path, string reason, Exception? inner) =>
        new($"The state file {path} is corrupt ({reason}). Nothing was changed. " +
            $"Inspect it, then {_recovery}.", inner);

    internal void DeleteAll()
    {
        var files = System.IO.Directory.Exists(Directory) ? System.IO.Directory.GetFiles(Directory) : [];
        foreach (var file in files.Where(f => f != LockPath))
        {
            TryDelete(file);
        }

        TryDelete(LockPath);
        try
        {
            System.IO.Directory.Delete(Directory);
        }
        catch (IOException)
        {
            // Someone put a file there (or another process recreated it): leave the directory.
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort on cleanup paths.
        }
    }
}

/// <summary>The held namespace lock. Read and write the state only through it.</summary>
public sealed class StateLock : IDisposable
{
    private readonly StateStore _store;
    private readonly SafeFileHandle _handle;

    internal StateLock(StateStore store, SafeFileHandle handle)
    {
        _store = store;
        _handle = handle;
    }

    public StateStore Store => _store;

    /// <summary>Reads the state; an absent file reads as an empty namespace. A corrupt one throws <see cref="StateException"/>.</summary>
    public NamespaceState Read() => _store.ReadFile() ?? NamespaceState.Empty(_store.Name);

    /// <summary>Writes the state atomically (temporary file, fsync, rename).</summary>
    public void Write(NamespaceState state) => _store.WriteFile(state);

    /// <summary>Reads another JSON file of the namespace directory (null when absent).</summary>
    public T? ReadJson<T>(string fileName, JsonTypeInfo<T> typeInfo)
        where T : class => _store.ReadJson(Path.Combine(_store.Directory, fileName), typeInfo);

    /// <summary>Writes another JSON file of the namespace directory atomically.</summary>
    public void WriteJson<T>(string fileName, T value, JsonTypeInfo<T> typeInfo) =>
        StateStore.WriteJson(Path.Combine(_store.Directory, fileName), value, typeInfo);

    /// <summary>Removes the state file, the lock file and the directory. The lock stays held until disposed.</summary>
    public void DeleteNamespace() => _store.DeleteAll();

    public void Dispose()
    {
        Libc.Flock(_handle, Libc.LOCK_UN);
        _handle.Dispose();
    }
}

/// <summary>The state directory or file cannot be used. The message says why and what to do.</summary>
public sealed class StateException : Exception
{
    public StateException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>The namespace lock was not free within the lock timeout (another deploy held it).</summary>
    public bool IsLockTimeout { get; init; }
}
