using Cluster.Rpc;

namespace LlmCluster.V1;

// Typed method descriptors of protos/llmcluster/v1 (written by hand: Grpc.Tools' service code
// needs Grpc.Core.Api, which does not restore here). ContractsTests checks them against the
// descriptors protoc generated, so a proto change that is not mirrored here fails a test.

/// <summary>Public API (gateway.proto).</summary>
public static class GatewayMethods
{
    public const string Service = "llmcluster.v1.Gateway";
    public static readonly Method<GenerateRequest, GenerateResponse> Generate = new(MethodType.ServerStreaming, Service, "Generate", GenerateRequest.Parser, GenerateResponse.Parser);
    public static readonly Method<ResumeRequest, GenerateResponse> Resume = new(MethodType.ServerStreaming, Service, "Resume", ResumeRequest.Parser, GenerateResponse.Parser);
    public static readonly Method<AbortRequest, AbortResponse> Abort = new(MethodType.Unary, Service, "Abort", AbortRequest.Parser, AbortResponse.Parser);
    public static readonly Method<GetModelInfoRequest, ModelInfo> GetModelInfo = new(MethodType.Unary, Service, "GetModelInfo", GetModelInfoRequest.Parser, ModelInfo.Parser);
    public static readonly Method<HealthRequest, HealthResponse> Health = new(MethodType.Unary, Service, "Health", HealthRequest.Parser, HealthResponse.Parser);
    public static readonly Method<ListSessionsRequest, ListSessionsResponse> ListSessions = new(MethodType.Unary, Service, "ListSessions", ListSessionsRequest.Parser, ListSessionsResponse.Parser);
    public static readonly Method<DeleteSessionRequest, DeleteSessionResponse> DeleteSession = new(MethodType.Unary, Service, "DeleteSession", DeleteSessionRequest.Parser, DeleteSessionResponse.Parser);
}

/// <summary>Internal prefill worker API (prefill.proto).</summary>
public static class PrefillMethods
{
    public const string Service = "llmcluster.v1.Prefill";
    public static readonly Method<PrefillRequest, PrefillResponse> Prefill = new(MethodType.Unary, Service, "Prefill", PrefillRequest.Parser, PrefillResponse.Parser);
}

/// <summary>Internal decode worker API (decode.proto).</summary>
public static class DecodeMethods
{
    public const string Service = "llmcluster.v1.Decode";
    public static readonly Method<DecodeRequest, DecodeResponse> Decode = new(MethodType.ServerStreaming, Service, "Decode", DecodeRequest.Parser, DecodeResponse.Parser);
}

/// <summary>Internal KV cache manager API (cache.proto).</summary>
public static class CacheManagerMethods
{
    public const string Service = "llmcluster.v1.CacheManager";

    /// <summary>Largest KvChunk.data, in bytes (DESIGN.md: blocks travel as chunks of at most 1 MiB).</summary>
    public const int MaxChunkBytes = 1 << 20;

    public static readonly Method<PutBlocksRequest, PutBlocksResponse> PutBlocks = new(MethodType.ClientStreaming, Service, "PutBlocks", PutBlocksRequest.Parser, PutBlocksResponse.Parser);
    public static readonly Method<GetBlocksRequest, GetBlocksResponse> GetBlocks = new(MethodType.ServerStreaming, Service, "GetBlocks", GetBlocksRequest.Parser, GetBlocksResponse.Parser);
    public static readonly Method<GetCheckpointRequest, Checkpoint> GetCheckpoint = new(MethodType.Unary, Service, "GetCheckpoint", GetCheckpointRequest.Parser, Checkpoint.Parser);
    public static readonly Method<ReleaseRequest, ReleaseResponse> Release = new(MethodType.Unary, Service, "Release", ReleaseRequest.Parser, ReleaseResponse.Parser);
}

/// <summary>The standard gRPC health service (grpc/health/v1/health.proto), on every service.</summary>
public static class HealthMethods
{
    public const string Service = "grpc.health.v1.Health";
    public static readonly Method<Grpc.Health.V1.HealthCheckRequest, Grpc.Health.V1.HealthCheckResponse> Check =
        new(MethodType.Unary, Service, "Check", Grpc.Health.V1.HealthCheckRequest.Parser, Grpc.Health.V1.HealthCheckResponse.Parser);
}
