using System.CommandLine;
using Cluster.Tests;
using LlmCtl.Commands;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>`llmctl tokenize`, run through System.CommandLine with captured output.</summary>
public class TokenizeCommandTests
{
    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var root = new RootCommand { TokenizeCommand.Create() };
        var code = root.Parse(["tokenize", .. args]).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (code, output.ToString(), error.ToString());
    }

    [SharedDataFact]
    public void Ids_mode_prints_ids_on_one_line()
    {
        var (code, output, _) = Run("--tokenizer", SharedData.Path_("models", "llama2-tokenizer"), "--ids", "--bos", "Hello world");
        Assert.Equal(0, code);
        Assert.Equal("1 15043 3186", output.Trim());
    }

    [SharedDataFact]
    public void Default_mode_lists_tokens_for_people()
    {
        var (code, output, _) = Run("--tokenizer", SharedData.Path_("models", "tokenizers", "gpt2", "tokenizer.json"), "Hello world\n");
        Assert.Equal(0, code);
        Assert.Contains("15496  \"Hello\"", output);
        Assert.Contains("\"\\u010a\"", output.Replace("Ċ", "\\u010a")); // the newline byte's stand-in char
        Assert.Contains("3 tokens, 12 bytes", output);
    }

    [SharedDataFact]
    public void Text_mode_decodes_ids()
    {
        var (code, output, _) = Run("--tokenizer", SharedData.Path_("models", "stories260K", "tok512.bin"), "--text", "1 403 407 261");
        Assert.Equal(0, code);
        Assert.False(string.IsNullOrEmpty(output));
        var (bad, _, error) = Run("--tokenizer", SharedData.Path_("models", "stories260K", "tok512.bin"), "--text", "1 99999");
        Assert.Equal(2, bad);
        Assert.Contains("99999", error);
    }

    [Fact]
    public void A_missing_tokenizer_is_a_usage_error()
    {
        var (code, _, error) = Run("--tokenizer", "/nonexistent/tokenizer.json", "x");
        Assert.Equal(2, code);
        Assert.Contains("--tokenizer", error);
    }
}
