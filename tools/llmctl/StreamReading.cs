using Grpc.Core;

namespace LlmCtl;

/// <summary>How the CLI reads a server stream: one blocking wait for the whole stream, each message handled
/// on the thread its read completed on. Blocking per message (ToBlockingEnumerable) woke the main thread for
/// every token: with `llmctl generate` beside the cluster on a 2-core machine, a wake-up per token on the
/// cores the decode step runs on (bench/RESULTS.md, issue 17).</summary>
internal static class StreamReading
{
    /// <summary>Calls <paramref name="handle"/> for each message of <paramref name="reader"/>, one at a time and
    /// in order; returns when the stream ends and throws what reading it threw.</summary>
    public static void ForEach<T>(IAsyncStreamReader<T> reader, Action<T> handle, CancellationToken ct = default) =>
        Task.Run(async () =>
        {
            await foreach (var message in reader.ReadAllAsync(ct)) handle(message);
        }, CancellationToken.None).GetAwaiter().GetResult();
}
