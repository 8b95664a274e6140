using OpenTelemetry.Trace;

namespace Cluster.Gateway;

public sealed partial class GatewayService
{
    /// <summary>The session store's Redis commands as spans of the requests that issue them.</summary>
    public void ConfigureTracing(TracerProviderBuilder tracing)
    {
        if (_sessionOwner is StackExchange.Redis.IConnectionMultiplexer redis) tracing.AddRedisInstrumentation(redis);
    }
}
