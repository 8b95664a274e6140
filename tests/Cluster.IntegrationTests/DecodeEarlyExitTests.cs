using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Cluster.Tests;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// A decode call that ends early (a write to its client throws, as it does once the client is gone)
/// must not free its sequence's cache while the batch still runs on it: the cache is native memory,
/// and freeing it under a running step corrupts the heap (a test host once died with glibc's
/// "free(): corrupted unsorted chunks" at a cluster's teardown, which cuts every stream).
/// </summary>
public sealed class DecodeEarlyExitTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    [SharedDataFact]
    public async Task A_call_whose_write_throws_returns_only_after_the_batch_has_let_go_of_its_sequence()
    {
        await using var cluster = await TestCluster.StartAsync(f.ModelPath);
        var decode = cluster.DecodeService;
        var prompt = f.Tokenizer.Encode("Once upon a time, there was a little girl named Lily.", addBos: true);
        var sampling = SamplingWire.FromEngine(new SamplingParameters { Temperature = 0, Seed = 1, MaxTokens = 400, IgnoreEos = true });
        using var prefillChannel = GrpcChannels.Create(cluster.Prefill.GrpcAddress);
        var prefilled = await new LlmCluster.V1.Prefill.PrefillClient(prefillChannel).PrefillAsync(new PrefillRequest
        {
            SessionId = "early-exit",
            PromptTokenIds = { prompt },
            Sampling = sampling,
            KvPolicy = PolicyMapping.ToWire("dense"),
        });

        for (int failAt = 1; failAt <= 5; failAt++)
        {
            var writer = new ThrowingWriter(failAt);
            using var context = new CallContext();
            var request = new DecodeRequest
            {
                Kv = prefilled.Kv,
                Sampling = sampling,
                PromptTokenIds = { prompt },
                GeneratedTokenIds = { prefilled.Outputs.Single().TokenId },
            };
            var e = await Assert.ThrowsAnyAsync<Exception>(() => decode.Decode(request, writer, context));
            Assert.True(e.ToString().Contains(ThrowingWriter.Message), e.ToString());
            // The call has returned, and its cache may be freed: the sequence must be out of the batch
            // already. The old code returned at once and left it running on the freed cache.
            Assert.Equal(0, decode.Running);
        }
    }

    /// <summary>Takes <c>failAt - 1</c> messages, then fails as a reset HTTP/2 stream does.</summary>
    private sealed class ThrowingWriter(int failAt) : IServerStreamWriter<DecodeResponse>
    {
        public const string Message = "the client's stream was reset";
        private int _written;

        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(DecodeResponse message) =>
            ++_written >= failAt ? Task.FromException(new IOException(Message)) : Task.CompletedTask;
    }

    /// <summary>The server call context of a call made in-process: never cancelled by its client.</summary>
    private sealed class CallContext : ServerCallContext, IDisposable
    {
        private readonly CancellationTokenSource _cancel = new();
        protected override string MethodCore => "/llmcluster.v1.Decode/Decode";
        protected override string HostCore => "localhost";
        protected override string PeerCore => "ipv4:127.0.0.1:0";
        protected override DateTime DeadlineCore => DateTime.MaxValue;
        protected override Metadata RequestHeadersCore { get; } = [];
        protected override CancellationToken CancellationTokenCore => _cancel.Token;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore => new(null, []);
        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();
        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
        public void Dispose() => _cancel.Dispose();
    }
}
