namespace Cluster.Engine.Chat;

/// <summary>One turn of a conversation: role is "system", "user" or "assistant" (templates may accept others).</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A model's chat template (tokenizer_config.json's <c>chat_template</c>), parsed once and rendered per
/// conversation with the variables Hugging Face's apply_chat_template passes: messages,
/// add_generation_prompt, bos_token, eos_token and raise_exception. Immutable and thread-safe.
/// </summary>
public sealed class ChatTemplate
{
    private readonly List<Node> _nodes;

    /// <exception cref="ChatTemplateException">The template uses syntax outside the supported Jinja subset.</exception>
    public ChatTemplate(string source) => _nodes = TemplateParser.Parse(source);

    /// <summary>The prompt text for <paramref name="messages"/>; with <paramref name="addGenerationPrompt"/> it ends
    /// where the assistant's reply begins.</summary>
    /// <exception cref="ChatTemplateException">The template raised an error (e.g. roles that do not alternate) or
    /// reached a construct outside the supported subset; the message names it and its line.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string bosToken, string eosToken)
    {
        var globals = new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken,
            ["eos_token"] = eosToken,
        };
        return TemplateEvaluator.Render(_nodes, globals);
    }

    /// <summary>
    /// The text a continuing turn adds to a conversation whose <paramref name="history"/> is already in the KV cache:
    /// Render(history + turn) less its prefix Render(history) without a generation prompt. Multi-turn sessions feed
    /// only this part, so the history is never re-rendered or recomputed.
    /// </summary>
    /// <exception cref="ChatTemplateException">The template renders the history differently once more messages follow
    /// (it is not append-only), so no continuation exists.</exception>
    public string RenderContinuation(IReadOnlyList<ChatMessage> history, IReadOnlyList<ChatMessage> turn, bool addGenerationPrompt, string bosToken, string eosToken)
    {
        var before = Render(history, false, bosToken, eosToken);
        var whole = Render([.. history, .. turn], addGenerationPrompt, bosToken, eosToken);
        if (!whole.StartsWith(before, StringComparison.Ordinal))
            throw new ChatTemplateException("the chat template is not append-only: it renders earlier messages differently when more follow");
        return whole[before.Length..];
    }
}
