using System.CommandLine;
using System.Text;
using Cluster.Engine.Tokenizers;

namespace LlmCtl.Commands;

/// <summary>
/// <c>llmctl tokenize --tokenizer PATH [--ids | --text] [INPUT]</c>: text to ids, or ids back to text.
/// INPUT is the argument, or standard input when it is absent. By default each token is listed with its
/// vocabulary string for people; <c>--ids</c> prints only the ids on one line for scripts; <c>--text</c>
/// reads ids (separated by spaces or commas) and prints their decoded text.
/// </summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer")
        {
            Description = "tokenizer.json, tokenizer.model, llama2.c tokenizer.bin, a .gguf file, or a model folder holding one",
            Required = true,
        };
        var ids = new Option<bool>("--ids") { Description = "print only the ids, space-separated, on one line" };
        var text = new Option<bool>("--text") { Description = "input is token ids; print the decoded text" };
        var bos = new Option<bool>("--bos") { Description = "prepend the BOS token when encoding" };
        var vocabSize = new Option<int?>("--vocab-size") { Description = "vocabulary size of a llama2.c tokenizer.bin (default: count its records)" };
        var input = new Argument<string?>("input") { Description = "text (or ids with --text); read from standard input when absent", Arity = ArgumentArity.ZeroOrOne };

        var command = new Command("tokenize", "Encode text to token ids, or decode ids with --text")
        {
            tokenizer, ids, text, bos, vocabSize, input,
        };
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            if (parseResult.GetValue(ids) && parseResult.GetValue(text))
            {
                error.WriteLine("--ids and --text cannot be used together");
                return 2;
            }
            ITokenizer tok;
            try
            {
                tok = TokenizerLoader.Load(parseResult.GetValue(tokenizer)!, parseResult.GetValue(vocabSize));
            }
            catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException)
            {
                error.WriteLine($"--tokenizer: {e.Message}");
                return 2;
            }
            var data = parseResult.GetValue(input) ?? Console.In.ReadToEnd();
            if (parseResult.GetValue(text)) return Decode(tok, data, output, error);
            Encode(tok, data, parseResult.GetValue(bos), parseResult.GetValue(ids), output);
            return 0;
        });
        return command;
    }

    private static void Encode(ITokenizer tok, string data, bool addBos, bool idsOnly, TextWriter output)
    {
        var encoded = tok.Encode(data, addBos);
        if (idsOnly)
        {
            output.WriteLine(string.Join(' ', encoded));
            return;
        }
        foreach (var id in encoded) output.WriteLine($"{id,8}  {Printable(tok.TokenText(id))}");
        output.WriteLine($"{encoded.Length} tokens, {Encoding.UTF8.GetByteCount(data)} bytes");
    }

    private static int Decode(ITokenizer tok, string data, TextWriter output, TextWriter error)
    {
        var ids = new List<int>();
        foreach (var part in data.Split([' ', ',', '\n', '\r', '\t', '[', ']'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (!int.TryParse(part, out var id) || id < 0 || id >= tok.VocabSize)
            {
                error.WriteLine($"input: '{part}' is not a token id in [0, {tok.VocabSize})");
                return 2;
            }
            ids.Add(id);
        }
        output.Write(tok.Decode(ids));
        return 0;
    }

    /// <summary>Token strings can hold newlines and control characters: show them escaped, one token a line.</summary>
    private static string Printable(string token)
    {
        var sb = new StringBuilder(token.Length + 2).Append('"');
        foreach (var c in token)
        {
            if (c == '"' || c == '\\') sb.Append('\\').Append(c);
            else if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}");
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }
}
