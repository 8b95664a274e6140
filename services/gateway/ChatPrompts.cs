using Cluster.Engine.Chat;
using Cluster.Engine.Tokenizers;
using Grpc.Core;
using LlmCluster.V1;
using EngineMessage = Cluster.Engine.Chat.ChatMessage;

namespace Cluster.Gateway;

/// <summary>Turns a request's chat messages into prompt tokens with the model's own chat template.</summary>
public static class ChatPrompts
{
    /// <summary>
    /// Renders <paramref name="chat"/> (a first turn: the whole conversation; a <paramref name="continuing"/> turn: only
    /// what its messages add to the history already in the KV cache) and tokenizes it. Hugging Face tokenizes a rendered
    /// template without adding special tokens, so BOS comes only from a bos_token the template itself writes.
    /// </summary>
    /// <exception cref="RpcException">FAILED_PRECONDITION when the model has no chat template; INVALID_ARGUMENT when
    /// the template refuses the messages or uses a construct the renderer does not support (the message says which).</exception>
    /// <param name="template">The gateway's --chat-template, which replaces the model's own (null: the model's).</param>
    public static int[] Encode(ITokenizer tokenizer, ChatPrompt chat, bool continuing, string? template = null)
    {
        var source = template ?? tokenizer.ChatTemplate
            ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, "the model has no chat_template: send text or token_ids, or start the gateway with --chat-template"));
        string bos = tokenizer.BosId >= 0 ? tokenizer.TokenText(tokenizer.BosId) : "";
        string eos = tokenizer.EosId >= 0 ? tokenizer.TokenText(tokenizer.EosId) : "";
        string text;
        try
        {
            // Parsed per request: templates are a few KB and parse in microseconds next to a prefill.
            var parsed = new ChatTemplate(source);
            var messages = ToEngine(chat.Messages);
            text = continuing
                ? parsed.RenderContinuation(ToEngine(chat.History), messages, addGenerationPrompt: true, bos, eos)
                : parsed.Render(messages, addGenerationPrompt: true, bos, eos);
        }
        catch (ChatTemplateException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"chat template: {e.Message}"));
        }
        // A leading bos_token is the BOS id, not its spelling; ordinary text encoding could split "<s>" into pieces.
        if (bos.Length > 0 && text.StartsWith(bos, StringComparison.Ordinal))
            return [tokenizer.BosId, .. tokenizer.Encode(text[bos.Length..], addBos: false)];
        return tokenizer.Encode(text, addBos: false);
    }

    private static List<EngineMessage> ToEngine(IEnumerable<LlmCluster.V1.ChatMessage> messages) =>
        messages.Select(m => new EngineMessage(m.Role, m.Content)).ToList();
}
