using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cluster.Serving.Kv;

/// <summary>
/// A directory of sessions the cache manager evicted from memory (<see cref="KvSessionStore"/>), one
/// file each (<see cref="KvSpillFile"/>), bounded by <see cref="BudgetBytes"/>: when a new file does
/// not fit, the oldest spilled files are deleted. A new instance on the same directory indexes the
/// files already there, so a restarted cache manager serves what it had spilled.
/// <para>
/// File names are <c>{sha256(session id)}.{sequence}.kv</c>: the hash keeps any session id a safe
/// name, and the sequence orders the files oldest first across restarts without trusting file times.
/// Files are written to a temporary name and renamed, so a crash never leaves a partial file under a
/// served name; a damaged file is still caught at read (length and hash) and deleted as a miss.
/// </para>
/// Not thread-safe: the store calls it under its lock.
/// </summary>
public sealed class KvSpill
{
    private const string Suffix = ".kv";
    private const string TempSuffix = ".tmp";
    private readonly Dictionary<string, (string Path, long Bytes, long Sequence)> _files = [];
    private readonly ILogger _log;
    private long _sequence;

    public KvSpill(string directory, long budgetBytes, ILogger? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        Directory = System.IO.Directory.CreateDirectory(directory).FullName;
        BudgetBytes = budgetBytes;
        _log = log ?? NullLogger.Instance;
        Index();
    }

    public string Directory { get; }
    public long BudgetBytes { get; }
    public long Bytes { get; private set; }
    public int Sessions => _files.Count;

    public bool Contains(string sessionId) => _files.ContainsKey(Key(sessionId));

    /// <summary>
    /// Writes the session's versions, replacing an earlier file of it, then deletes the oldest other
    /// files until the spill is within its budget. Returns how many sessions the budget cost (deleted
    /// files, plus this one if it alone is larger than the budget). An I/O error is logged and the
    /// session is lost: the spill is a cache, and decode workers rebuild a missing session's KV.
    /// </summary>
    public int Write(string sessionId, IReadOnlyList<StoredKv> versions)
    {
        var key = Key(sessionId);
        var path = Path.Combine(Directory, $"{key}.{++_sequence}{Suffix}");
        var temp = path + TempSuffix;
        long bytes;
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                KvSpillFile.Write(file, sessionId, versions);
                bytes = file.Length;
                file.Flush(flushToDisk: true);   // on disk before the rename makes it visible
            }
            if (bytes > BudgetBytes)
            {
                File.Delete(temp);
                Delete(sessionId);   // an older file of it would now be stale
                _log.LogWarning("KV spill: session {Session} ({Bytes} bytes) is larger than the whole spill budget ({Budget} bytes); dropped", sessionId, bytes, BudgetBytes);
                return 1;
            }
            File.Move(temp, path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            _log.LogWarning(e, "KV spill: could not write session {Session} to {Path}; dropped", sessionId, path);
            return 0;
        }
        Delete(sessionId);
        _files[key] = (path, bytes, _sequence);
        Bytes += bytes;
        return Trim(keep: key);
    }

    /// <summary>
    /// The session's versions, or null when it is not spilled or its file is damaged (then the file
    /// is deleted and a warning logged: a miss, never a crash). The file stays until <see cref="Delete"/>.
    /// </summary>
    public List<StoredKv>? TryRead(string sessionId)
    {
        if (!_files.TryGetValue(Key(sessionId), out var f)) return null;
        try
        {
            using var file = new FileStream(f.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            return KvSpillFile.Read(file, sessionId);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            _log.LogWarning(e, "KV spill: {Path} (session {Session}) is unreadable; deleted, served as a miss", f.Path, sessionId);
            Delete(sessionId);
            return null;
        }
    }

    /// <summary>Deletes the session's file; false when it had none.</summary>
    public bool Delete(string sessionId)
    {
        if (!_files.Remove(Key(sessionId), out var f)) return false;
        Bytes -= f.Bytes;
        TryDelete(f.Path);
        return true;
    }

    /// <summary>Deletes the oldest files (never <paramref name="keep"/>) until within the budget; returns how many.</summary>
    private int Trim(string? keep)
    {
        int deleted = 0;
        while (Bytes > BudgetBytes)
        {
            var oldest = _files.Where(f => f.Key != keep).OrderBy(f => f.Value.Sequence).Select(f => f.Key).FirstOrDefault();
            if (oldest is null) break;
            var f = _files[oldest];
            _files.Remove(oldest);
            Bytes -= f.Bytes;
            TryDelete(f.Path);
            deleted++;
        }
        if (deleted > 0) _log.LogInformation("KV spill: deleted the {Count} oldest spilled sessions to stay within {Budget} bytes", deleted, BudgetBytes);
        return deleted;
    }

    /// <summary>Finds the files a previous instance left: temporary ones (a write cut short) are deleted,
    /// and of two files for one session (a crash between rename and delete) the newer is kept.</summary>
    private void Index()
    {
        foreach (var path in System.IO.Directory.EnumerateFiles(Directory))
        {
            var name = Path.GetFileName(path);
            if (name.EndsWith(TempSuffix, StringComparison.Ordinal)) { TryDelete(path); continue; }
            if (!name.EndsWith(Suffix, StringComparison.Ordinal)) continue;   // not ours: leave it
            var parts = name[..^Suffix.Length].Split('.');
            if (parts is not [var key, var seq] || key.Length != 64 || !long.TryParse(seq, NumberStyles.None, CultureInfo.InvariantCulture, out var sequence)) continue;
            long bytes = new FileInfo(path).Length;
            if (_files.TryGetValue(key, out var other))
            {
                if (other.Sequence > sequence) { TryDelete(path); continue; }
                TryDelete(other.Path);
                Bytes -= other.Bytes;
            }
            _files[key] = (path, bytes, sequence);
            Bytes += bytes;
            _sequence = Math.Max(_sequence, sequence);
        }
        StartupDeleted = Trim(keep: null);   // the budget may have been lowered since
        if (_files.Count > 0) _log.LogInformation("KV spill: {Sessions} sessions ({Bytes} bytes) found in {Directory}", _files.Count, Bytes, Directory);
    }

    /// <summary>Spilled sessions deleted at startup because the budget was lowered.</summary>
    public int StartupDeleted { get; private set; }

    private static string Key(string sessionId) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sessionId)));

    private void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { _log.LogWarning(e, "KV spill: could not delete {Path}", path); }
    }
}
