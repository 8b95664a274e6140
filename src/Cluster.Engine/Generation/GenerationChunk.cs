using Cluster.Engine.Sampling;

namespace Cluster.Engine.Generation;

/// <summary>
/// One streamed piece of one output: the token generated at this step with the text it released
/// (empty while held back for a possible stop string or an unfinished UTF-8 character), and, on the
/// output's last chunk, why it ended. An aborted output's last chunk carries no token.
/// </summary>
/// <param name="Index">Which of the request's n outputs (0-based).</param>
/// <param name="TokenId">The token, or null on a chunk that only ends the output (abort).</param>
/// <param name="Logprobs">Present when the request asked for logprobs.</param>
/// <param name="Finish">Set on the output's last chunk.</param>
/// <param name="Elapsed">Time to produce this token: the prefill for the first, one decode step after.</param>
/// <param name="Score">Beam search only: the output's score, sum of logprobs / length^length_penalty.</param>
public sealed record GenerationChunk(
    int Index, int? TokenId, string Text, TokenLogprobs? Logprobs, FinishReason? Finish, TimeSpan Elapsed, double? Score = null);

/// <summary>A whole output, gathered from its chunks.</summary>
public sealed record GenerationOutput(
    int Index, IReadOnlyList<int> Ids, string Text, IReadOnlyList<TokenLogprobs>? Logprobs, FinishReason Finish,
    TimeSpan TimeToFirstToken, TimeSpan DecodeTime, double? Score)
{
    /// <summary>Gathers streamed chunks into one output per index, in index order.</summary>
    public static IReadOnlyList<GenerationOutput> Collect(IEnumerable<GenerationChunk> chunks) =>
        chunks.GroupBy(c => c.Index).OrderBy(g => g.Key).Select(g =>
        {
            var list = g.ToList();
            var tokens = list.Where(c => c.TokenId is not null).ToList();
            var last = list[^1];
            return new GenerationOutput(
                g.Key,
                tokens.Select(c => c.TokenId!.Value).ToList(),
                string.Concat(list.Select(c => c.Text)),
                tokens.All(c => c.Logprobs is not null) && tokens.Count > 0 ? tokens.Select(c => c.Logprobs!).ToList() : null,
                last.Finish ?? throw new InvalidOperationException($"output {g.Key} has no final chunk"),
                tokens.Count > 0 ? tokens[0].Elapsed : TimeSpan.Zero,
                tokens.Skip(1).Aggregate(TimeSpan.Zero, (sum, c) => sum + c.Elapsed),
                last.Score);
        }).ToList();
}

/// <summary>
/// Where to pick a stream up again: a cache holding the KV of the prompt and of some prefix of
/// <paramref name="Generated"/> (at least all but the last token), and the tokens already generated
/// for output <paramref name="Index"/>. The caller keeps ownership of the cache, which generation
/// extends (and, when it already holds every token, truncates by one to recompute the last logits).
/// This is also how a decode worker continues from a prefill worker's KV and first token.
/// </summary>
public sealed record GenerationResume(KvCache.SequenceKvCache Cache, IReadOnlyList<int> Generated, int Index = 0);
