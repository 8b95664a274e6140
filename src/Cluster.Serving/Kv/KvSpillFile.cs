using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Serving.Kv;

/// <summary>
/// The format of one spilled session (<see cref="KvSpill"/>): all its stored versions in one file.
/// <code>
/// header:  "LLMKVSPL" | int32 format (2) | int64 payload bytes | 32 bytes SHA-256 of the payload
/// payload: string session id | int32 versions, then per version:
///            int32 layers, kv heads, head dim | int32 RoPE layout | int32 n, n x float64 inverse frequencies
///            int32 precision (KvPrecision: 0 fp32, 1 fp16, 2 bf16)
///            int64 version | int32 tokens seen | string policy | bool checkpoint | int32 output index | int32 tokens received
///            int32 blocks, then per block: int32 layer | int32 heads, per head int32 n + n x int32 positions
///                                          | int32 n + n bytes K | int32 n + n bytes V   (as the blocks arrived)
/// </code>
/// Format 1 (before issue 17) had no precision and counted K and V in fp32 elements; it is still read.
/// Little-endian throughout (strings as <see cref="BinaryWriter"/> writes them). The payload length
/// catches a truncated file and the hash a corrupted one before any of it is parsed, so a damaged
/// file is refused as a whole rather than served as wrong KV.
/// </summary>
public static class KvSpillFile
{
    private static readonly byte[] Magic = "LLMKVSPL"u8.ToArray();
    private const int FormatVersion = 2;
    private const int HashBytes = 32;
    /// <summary>Bytes before the payload.</summary>
    public const int HeaderBytes = 8 + 4 + 8 + HashBytes;

    /// <summary>Writes <paramref name="versions"/> of <paramref name="sessionId"/> to a seekable <paramref name="stream"/> at its start.</summary>
    public static void Write(Stream stream, string sessionId, IReadOnlyList<StoredKv> versions)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("KV spill files are written little-endian from the float arrays' memory");
        long start = stream.Position;
        stream.Write(new byte[HeaderBytes]);   // filled in once the payload's length and hash are known
        using var sha = SHA256.Create();
        using (var crypto = new CryptoStream(stream, sha, CryptoStreamMode.Write, leaveOpen: true))
        using (var w = new BinaryWriter(crypto, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(sessionId);
            w.Write(versions.Count);
            foreach (var kv in versions) WriteVersion(w, kv);
            w.Flush();
            crypto.FlushFinalBlock();
        }
        long end = stream.Position;
        stream.Position = start;
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(FormatVersion);
            w.Write(end - start - HeaderBytes);
            w.Write(sha.Hash!);
        }
        stream.Position = end;
    }

    private static void WriteVersion(BinaryWriter w, StoredKv kv)
    {
        w.Write(kv.Shape.Layers);
        w.Write(kv.Shape.KvHeads);
        w.Write(kv.Shape.HeadDim);
        w.Write((int)kv.Shape.Rope.Layout);
        w.Write(kv.Shape.Rope.InverseFrequencies.Length);
        w.Write(MemoryMarshal.AsBytes(kv.Shape.Rope.InverseFrequencies.AsSpan()));
        w.Write((int)kv.Shape.Precision);
        w.Write(kv.Version);
        w.Write(kv.TokensSeen);
        w.Write(kv.Policy);
        w.Write(kv.Checkpoint);
        w.Write(kv.OutputIndex);
        w.Write(kv.TokensReceived);
        w.Write(kv.Layers.Length);
        foreach (var block in kv.Layers)
        {
            w.Write(block.Layer);
            w.Write(block.Positions.Length);
            foreach (var p in block.Positions)
            {
                w.Write(p.Length);
                w.Write(MemoryMarshal.AsBytes(p.AsSpan()));
            }
            foreach (var data in new[] { block.Keys, block.Values })
            {
                w.Write(data.Length);
                w.Write(data);
            }
        }
    }

    /// <summary>
    /// Reads a file written by <see cref="Write"/>. Throws <see cref="InvalidDataException"/> for a
    /// file that is truncated, corrupted, of another format, or of another session than <paramref name="sessionId"/>.
    /// </summary>
    public static List<StoredKv> Read(Stream stream, string sessionId)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("KV spill files are read little-endian into the float arrays' memory");
        var header = new byte[HeaderBytes];
        if (stream.ReadAtLeast(header, HeaderBytes, throwOnEndOfStream: false) < HeaderBytes) throw new InvalidDataException("truncated header");
        if (!header.AsSpan(0, 8).SequenceEqual(Magic)) throw new InvalidDataException("not a KV spill file");
        int format = BitConverter.ToInt32(header, 8);
        if (format is not (1 or FormatVersion)) throw new InvalidDataException($"spill format {format}, this build reads 1 and {FormatVersion}");
        long payload = BitConverter.ToInt64(header, 12);
        long start = stream.Position;
        if (payload < 0 || stream.Length - start != payload) throw new InvalidDataException($"payload of {stream.Length - start} bytes, the header says {payload} (truncated or appended to)");

        // First pass: the hash, so that nothing of a damaged file is parsed (a corrupted count could ask for gigabytes).
        using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            var buffer = new byte[1 << 20];
            int n;
            while ((n = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, n);
            if (!hash.GetHashAndReset().AsSpan().SequenceEqual(header.AsSpan(8 + 4 + 8, HashBytes))) throw new InvalidDataException("payload hash mismatch (corrupted)");
        }
        stream.Position = start;
        try
        {
            using var r = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
            var id = r.ReadString();
            if (id != sessionId) throw new InvalidDataException($"the file holds session '{id}', not '{sessionId}'");
            int count = Count(r, stream);
            var versions = new List<StoredKv>(count);
            for (int i = 0; i < count; i++) versions.Add(ReadVersion(r, stream, sessionId, format));
            if (stream.Position != stream.Length) throw new InvalidDataException("bytes after the last version");
            return versions;
        }
        catch (Exception e) when (e is EndOfStreamException or ArgumentException or FormatException)
        {
            throw new InvalidDataException($"malformed payload: {e.Message}", e);
        }
    }

    private static StoredKv ReadVersion(BinaryReader r, Stream s, string sessionId, int format)
    {
        int layers = r.ReadInt32(), kvHeads = r.ReadInt32(), headDim = r.ReadInt32();
        var layout = (RopeLayout)r.ReadInt32();
        if (!Enum.IsDefined(layout)) throw new InvalidDataException($"unknown RoPE layout {(int)layout}");
        var freqs = ReadArray<double>(r, s);
        var precision = format == 1 ? KvPrecision.Fp32 : (KvPrecision)r.ReadInt32();
        if (!Enum.IsDefined(precision)) throw new InvalidDataException($"unknown KV precision {(int)precision}");
        var shape = new KvShape(layers, kvHeads, headDim, new RopeTable(freqs, layout), precision);
        long version = r.ReadInt64();
        int tokensSeen = r.ReadInt32();
        var policy = r.ReadString();
        bool checkpoint = r.ReadBoolean();
        int outputIndex = r.ReadInt32(), tokensReceived = r.ReadInt32();
        var blocks = new WireKvBlock[Count(r, s)];
        // Format 1 counted K and V in fp32 elements, format 2 in bytes.
        int elementBytes = format == 1 ? sizeof(float) : 1;
        for (int b = 0; b < blocks.Length; b++)
        {
            int layer = r.ReadInt32();
            var positions = new int[Count(r, s)][];
            for (int h = 0; h < positions.Length; h++) positions[h] = ReadArray<int>(r, s);
            blocks[b] = new WireKvBlock(layer, positions, precision, ReadBytes(r, s, elementBytes), ReadBytes(r, s, elementBytes));
        }
        return new StoredKv(sessionId, shape, blocks, tokensSeen, policy, version, checkpoint, outputIndex, tokensReceived);
    }

    /// <summary>A count, checked against the bytes left so that a bad one fails instead of allocating.</summary>
    private static int Count(BinaryReader r, Stream s, int elementBytes = 1)
    {
        int n = r.ReadInt32();
        if (n < 0 || (long)n * elementBytes > s.Length - s.Position) throw new InvalidDataException($"count {n} at byte {s.Position} overruns the file");
        return n;
    }

    private static byte[] ReadBytes(BinaryReader r, Stream s, int elementBytes)
    {
        var a = new byte[(long)Count(r, s, elementBytes) * elementBytes];
        s.ReadExactly(a);
        return a;
    }

    private static T[] ReadArray<T>(BinaryReader r, Stream s) where T : unmanaged
    {
        var a = new T[Count(r, s, System.Runtime.CompilerServices.Unsafe.SizeOf<T>())];
        s.ReadExactly(MemoryMarshal.AsBytes(a.AsSpan()));
        return a;
    }
}
