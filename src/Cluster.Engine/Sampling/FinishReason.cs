namespace Cluster.Engine.Sampling;

/// <summary>Why an output ended.</summary>
public enum FinishReason
{
    /// <summary>A stop string or a stop token id was produced.</summary>
    Stop,
    /// <summary>max_tokens reached, or the model's context is full.</summary>
    Length,
    /// <summary>The model produced its end-of-sequence token.</summary>
    Eos,
    /// <summary>The request was cancelled.</summary>
    Abort,
}

public static class FinishReasonNames
{
    /// <summary>The API spelling: "stop", "length", "eos", "abort".</summary>
    public static string ToApiName(this FinishReason reason) => reason switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        FinishReason.Eos => "eos",
        FinishReason.Abort => "abort",
        _ => throw new ArgumentOutOfRangeException(nameof(reason)),
    };
}
