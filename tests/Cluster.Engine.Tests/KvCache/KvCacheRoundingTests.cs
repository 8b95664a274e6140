using Cluster.Engine.KvCache;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.KvCache;

/// <summary>`llmctl perplexity --kv-dtype` (issue 17): every token's K and V end up holding values the
/// 16-bit format can represent (checked on the bits, not with the conversion code), and fp32 changes nothing.</summary>
public sealed class KvCacheRoundingTests
{
    [SharedDataTheory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void Every_kept_token_holds_values_of_the_precision(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        using var model = TestModels.Load(TestModels.Stories260K);
        int[] ids = [1, 403, 407, 261, 378, 115, 271, 260, 334, 29, 22, 350];
        var logits = new float[model.Config.VocabSize];
        Assert.All(ids, id => Assert.InRange(id, 0, model.Config.VocabSize - 1));
        using var plain = model.CreateCache(ids.Length);
        using var rounded = model.CreateCache(ids.Length);
        for (int t = 0; t < ids.Length; t++)
        {
            KvRoom.Forward(model, [ids[t]], plain, logits);
            KvRoom.Forward(model, [ids[t]], rounded, logits);
            KvCacheRounding.RoundToken(model.Backend, rounded, t, p);
        }
        bool changed = false;
        for (int l = 0; l < model.Config.Layers; l++)
        {
            var a = KvCacheSnapshot.Capture(model.Backend, plain, l);
            var b = KvCacheSnapshot.Capture(model.Backend, rounded, l);
            int perHead = ids.Length * model.Config.HeadDim;
            foreach (var (i, x, y) in a.Keys.Concat(a.Values).Zip(b.Keys.Concat(b.Values)).Select((v, i) => (i, v.First, v.Second)))
            {
                uint bits = BitConverter.SingleToUInt32Bits(y);
                switch (p)
                {
                    case KvPrecision.Fp32: Assert.Equal(BitConverter.SingleToUInt32Bits(x), bits); break;
                    case KvPrecision.Bf16: Assert.Equal(0u, bits & 0xffff); break;                      // bf16 is fp32's top half
                    default: Assert.True((float)(Half)y == y, $"{y} is not an fp16 value"); break;   // .NET's own Half cast
                }
                // The first token's K and V come from the same inputs in both runs (later ones attend to rounded
                // KV): rounding moved each normal value by at most half a unit in the last place, relative 2^-8 (bf16), 2^-11 (fp16).
                bool firstToken = i % perHead < model.Config.HeadDim;
                if (firstToken && Math.Abs(x) >= 6.103515625e-05f)
                    Assert.True(Math.Abs(y - x) <= Math.Abs(x) * (p == KvPrecision.Bf16 ? 1.0 / 256 : 1.0 / 2048), $"{x} rounded to {y}");
                changed |= x != y;
            }
        }
        // Later tokens attend to the rounded KV: their own K and V differ too, so the run did change (except fp32).
        Assert.Equal(p != KvPrecision.Fp32, changed);
    }
}
