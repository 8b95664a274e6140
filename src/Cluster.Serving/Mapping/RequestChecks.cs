using Cluster.Engine.Model;
using Grpc.Core;

namespace Cluster.Serving.Mapping;

/// <summary>Checks of request contents shared by the services; each failure is INVALID_ARGUMENT naming what and why.</summary>
public static class RequestChecks
{
    public static void Prompt(IReadOnlyList<int> prompt, LlamaConfig config, string field = "prompt")
    {
        if (prompt.Count == 0) throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} is empty"));
        for (int i = 0; i < prompt.Count; i++)
            if ((uint)prompt[i] >= config.VocabSize)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} token {i} is {prompt[i]}, outside the vocabulary [0, {config.VocabSize})"));
        if (prompt.Count >= config.MaxPositions)
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the {field} has {prompt.Count} tokens but the model's context is {config.MaxPositions} (prefill runs the whole prompt before any policy compresses it)"));
    }
}
