using Cluster.Engine.Tokenizers;
using Cluster.Gateway;
using Grpc.Core;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>The gateway's chat prompt: the model's own template, rendered and tokenized (Qwen2.5's ChatML and
/// Mistral instruct's from shared/models/tokenizers).</summary>
public class ChatPromptTests
{
    private static ITokenizer Tokenizer(string name) => TokenizerLoader.Load(SharedData.Path_("models", "tokenizers", name));

    private static ChatMessage Message(string role, string content) => new() { Role = role, Content = content };

    [SharedDataFact]
    public void First_turn_is_the_rendered_conversation_with_generation_prompt()
    {
        var tok = Tokenizer("qwen2.5-0.5b");
        var chat = new ChatPrompt { Messages = { Message("system", "Be brief."), Message("user", "Hi!") } };
        var ids = ChatPrompts.Encode(tok, chat, continuing: false);
        var expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n";
        Assert.Equal(tok.Encode(expected, addBos: false), ids);
        Assert.Equal(151644, ids[0]); // "<|im_start|>" is one added token, not its spelling
    }

    [SharedDataFact]
    public void Continuing_turn_feeds_only_what_the_new_message_adds()
    {
        var tok = Tokenizer("qwen2.5-0.5b");
        var chat = new ChatPrompt
        {
            History = { Message("user", "Hi!"), Message("assistant", "Hello.") },
            Messages = { Message("user", "Bye!") },
        };
        var ids = ChatPrompts.Encode(tok, chat, continuing: true);
        Assert.Equal(tok.Encode("<|im_start|>user\nBye!<|im_end|>\n<|im_start|>assistant\n", addBos: false), ids);
    }

    [SharedDataFact]
    public void Leading_bos_token_is_the_bos_id()
    {
        // Mistral instruct's template (mistralai/Mistral-7B-Instruct-v0.1) writes bos_token first; its text "<s>" must
        // become the BOS id, not the pieces of "<", "s", ">".
        const string mistral = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
        var tok = new WithTemplate(Tokenizer("mistral-7b-v0.1"), mistral);
        var ids = ChatPrompts.Encode(tok, new ChatPrompt { Messages = { Message("user", "Hi!") } }, continuing: false);
        Assert.Equal([tok.BosId, .. tok.Encode("[INST] Hi! [/INST]", addBos: false)], ids);
    }

    [SharedDataFact]
    public void Template_errors_are_invalid_argument_naming_the_cause()
    {
        var tok = Tokenizer("qwen2.5-0.5b");
        var chat = new ChatPrompt { History = { Message("user", "Hi!") }, Messages = { Message("user", "Again") } };
        // Qwen's template adds a default system prompt only when the first message is not one: rendering with and
        // without more messages agrees, so this continues; a template that rewrites history would be refused.
        Assert.NotEmpty(ChatPrompts.Encode(tok, chat, continuing: true));
        var e = Assert.Throws<RpcException>(() => ChatPrompts.Encode(new WithTemplate(tok, null), chat, continuing: false));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
    }

    /// <summary>A tokenizer with another chat_template (null: a model folder without one).</summary>
    private sealed class WithTemplate(ITokenizer inner, string? template) : ITokenizer
    {
        public string? ChatTemplate => template;
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => inner.EosId;
        public int[] Encode(string text, bool addBos) => inner.Encode(text, addBos);
        public ReadOnlySpan<byte> TokenBytes(int previousId, int id) => inner.TokenBytes(previousId, id);
        public string Decode(IEnumerable<int> ids) => inner.Decode(ids);
        public string TokenText(int id) => inner.TokenText(id);
    }
}
