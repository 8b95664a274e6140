using System.Text;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// One output of a request as the gateway relays it: its index, its token log, how many tokens it has
/// sent, and, for an output that is final only at the end (best_of &gt; n, beam search), the tokens held
/// back until it is known whether and at which rank it is returned.
/// </summary>
internal sealed class RelayedOutput(int index, string logId, bool held = false)
{
    /// <summary>Chunk.index and Complete.index of this output.</summary>
    public int Index { get; } = index;

    /// <summary>Its token log: the session's own for a single output, <see cref="SessionRecord.OutputId"/> with several.</summary>
    public string LogId { get; } = logId;

    /// <summary>True while its tokens are kept here instead of being logged and sent.</summary>
    public bool Held { get; } = held;

    /// <summary>Tokens logged and sent so far.</summary>
    public int Generated { get; set; }

    public bool Completed { get; set; }

    /// <summary>Why it ended, once it has.</summary>
    public FinishReason Finish { get; set; } = FinishReason.Unspecified;

    /// <summary>Whether a decode worker has reported a checkpoint of this output (a restart can start there).</summary>
    public bool Checkpointed { get; set; }

    public List<int> HeldIds { get; } = [];
    public StringBuilder HeldText { get; } = new();
    public List<TokenLogprob> HeldLogprobs { get; } = [];

    /// <summary>Sum of the held tokens' logprobs: best_of's ranking key (OpenAI's and vLLM's).</summary>
    public double CumulativeLogprob => HeldLogprobs.Sum(l => (double)l.Logprob);

    public void Hold(IEnumerable<int> ids, string text, IEnumerable<TokenLogprob> logprobs)
    {
        HeldIds.AddRange(ids);
        HeldText.Append(text);
        HeldLogprobs.AddRange(logprobs);
    }

    /// <summary>Drops what was held (a beam search restarted on another worker starts over).</summary>
    public void Clear()
    {
        HeldIds.Clear();
        HeldText.Clear();
        HeldLogprobs.Clear();
        Finish = FinishReason.Unspecified;
    }
}
