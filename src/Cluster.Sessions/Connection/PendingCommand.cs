using System.Buffers;

namespace Cluster.Redis.Connection;

/// <summary>
/// One command on its way: the encoded bytes (rented, returned once written or failed) and the
/// completion its caller awaits. Derives from the completion source to save an allocation.
/// Continuations run asynchronously so the reader loop never runs caller code.
/// </summary>
internal sealed class PendingCommand : TaskCompletionSource<RespValue>
{
    private byte[]? _buffer;

    private PendingCommand(byte[] buffer, int length, string name)
        : base(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        _buffer = buffer;
        Length = length;
        Name = name;
    }

    public int Length { get; }
    /// <summary>Stopwatch timestamp after which the sweeper fails the command with a timeout.</summary>
    public long Deadline { get; set; }
    public TimeSpan Timeout { get; set; }
    /// <summary>The command name, for error messages.</summary>
    public string Name { get; }
    public ReadOnlySpan<byte> Bytes => _buffer.AsSpan(0, Length);
    public ReadOnlyMemory<byte> Memory => _buffer.AsMemory(0, Length);

    public static PendingCommand Create(ReadOnlySpan<RedisArg> args)
    {
        int length = RespCommandWriter.GetEncodedLength(args);
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        RespCommandWriter.Write(args, buffer);
        return new PendingCommand(buffer, length, args[0].ToString());
    }

    /// <summary>Returns the encoded bytes to the pool; safe to call more than once.</summary>
    public void ReturnBuffer()
    {
        var b = Interlocked.Exchange(ref _buffer, null);
        if (b is not null) ArrayPool<byte>.Shared.Return(b);
    }

    public void TimeOut(RedisOptions endpoint) =>
        TrySetException(new RedisTimeoutException($"{Name}: no reply from {endpoint} within {Timeout.TotalMilliseconds:0} ms"));

    /// <summary>Completes with the reply, turning an error reply into <see cref="RedisServerException"/>.</summary>
    public void Complete(RespValue reply)
    {
        if (reply.Type == RespType.Error) TrySetException(new RedisServerException(reply.AsString()!));
        else TrySetResult(reply);
    }
}
