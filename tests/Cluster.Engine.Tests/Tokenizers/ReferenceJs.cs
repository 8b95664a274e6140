using Cluster.Tests;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>@lenml/tokenizers (the transformers.js tokenizers port) under node, installed by .ci/run with
/// `npm ci --prefix tests/reference/tokenizers-js`.</summary>
internal static class ReferenceJs
{
    private static string Folder => ReferenceTokenizers.Script("tokenizers-js");

    /// <summary>Ids without added BOS/EOS, or null (skip) when node or the package is missing outside CI.</summary>
    public static int[][]? Encode(string tokenizerJson, IReadOnlyList<string> texts)
    {
        var installed = Directory.Exists(Path.Combine(Folder, "node_modules", "@lenml", "tokenizers")) && File.Exists("/usr/bin/node");
        if (!installed)
        {
            throw References.Missing("node or @lenml/tokenizers is missing: run `npm ci --prefix tests/reference/tokenizers-js`");
        }
        return ReferenceTokenizers.RunBatch("/usr/bin/node", [Path.Combine(Folder, "encode.mjs"), tokenizerJson], texts, TimeSpan.FromMinutes(10));
    }
}
