using Cluster.Serving.Routing;
using Grpc.Net.Client;
using System.Net;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>With --otlp-endpoint a service posts its spans as OTLP/HTTP protobuf to {endpoint}/v1/traces.</summary>
[Collection(nameof(ClusterObservabilityTests))]
public sealed class OtlpExportTests
{
    [Fact]
    public async Task A_service_with_an_otlp_endpoint_posts_its_spans_to_v1_traces()
    {
        int port = FreePorts.Next();
        using var collector = new HttpListener();
        collector.Prefixes.Add($"http://127.0.0.1:{port}/");
        collector.Start();
        var received = collector.GetContextAsync();

        var options = ServiceOptions.Parse(ServiceRole.CacheManager,
            ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--otlp-endpoint", $"http://127.0.0.1:{port}"], new Dictionary<string, string?>());
        var service = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using (var channel = GrpcChannels.Create(service.GrpcAddress))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => new LlmCluster.V1.CacheManager.CacheManagerClient(channel).GetCheckpointAsync(new GetCheckpointRequest { SessionId = "none" }).ResponseAsync);
            Assert.NotEqual(StatusCode.Unavailable, e.StatusCode);
        }
        await service.DisposeAsync(); // the batch exporter flushes on dispose

        var context = await received.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("POST", context.Request.HttpMethod);
        Assert.Equal("/v1/traces", context.Request.Url!.AbsolutePath);
        Assert.Equal("application/x-protobuf", context.Request.ContentType);
        using var body = new MemoryStream();
        await context.Request.InputStream.CopyToAsync(body);
        // The span's name travels as a plain protobuf string inside the export request.
        Assert.Contains("/llmcluster.v1.CacheManager/GetCheckpoint", System.Text.Encoding.UTF8.GetString(body.ToArray()));
        context.Response.StatusCode = 200;
        context.Response.Close();
    }
}
