using System.IO.MemoryMappedFiles;

namespace Cluster.Engine.Loaders;

/// <summary>A whole file mapped read-only; <see cref="Pointer"/> stays valid until disposal.</summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;

    public MappedFile(string path)
    {
        Path = path;
        Length = new FileInfo(path).Length;
        if (Length == 0) throw new ModelFormatException(path, "file is empty");
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        Pointer = p + _view.PointerOffset;
    }

    public string Path { get; }
    public long Length { get; }
    public byte* Pointer { get; }

    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || offset + length > Length)
            throw new ModelFormatException(Path, $"truncated: needs bytes {offset}..{offset + length} but the file has {Length}");
        return new ReadOnlySpan<byte>(Pointer + offset, length);
    }

    /// <summary>
    /// Lets the kernel drop the pages read so far (madvise MADV_DONTNEED). For a read-only file
    /// mapping this loses nothing: a page touched again is read back from the file. Called after
    /// weights were converted at load (e.g. fp32 to q8_0), so that resident memory is the converted
    /// copy, not that plus the source pages the conversion read.
    /// </summary>
    public void DropResidentPages()
    {
        if (!OperatingSystem.IsLinux()) return;
        long page = Environment.SystemPageSize;
        var start = (nint)Pointer & ~(nint)(page - 1);
        var end = (nint)Pointer + (nint)Length;
        _ = Madvise((void*)start, (nuint)(end - start), 4 /* MADV_DONTNEED */);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(void* address, nuint length, int advice);

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
