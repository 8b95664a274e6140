using System.Reflection;
using System.Text.RegularExpressions;
using Cluster.Rpc;
using Cluster.Tests;
using Google.Protobuf.Reflection;
using LlmCluster.V1;
using Xunit;

namespace Cluster.Rpc.Tests.Contracts;

/// <summary>The hand-written descriptors of Cluster.Contracts match the protos, and the protos are documented.</summary>
public sealed partial class ContractsTests
{
    public static TheoryData<string, Type> Services => new()
    {
        { GatewayReflection.Descriptor.Services.Single().FullName, typeof(GatewayMethods) },
        { PrefillReflection.Descriptor.Services.Single().FullName, typeof(PrefillMethods) },
        { DecodeReflection.Descriptor.Services.Single().FullName, typeof(DecodeMethods) },
        { CacheReflection.Descriptor.Services.Single().FullName, typeof(CacheManagerMethods) },
    };

    [Theory]
    [MemberData(nameof(Services))]
    public void Descriptors_match_the_proto(string serviceName, Type holder)
    {
        var service = new[] { GatewayReflection.Descriptor, PrefillReflection.Descriptor, DecodeReflection.Descriptor, CacheReflection.Descriptor }
            .SelectMany(f => f.Services).Single(s => s.FullName == serviceName);
        var fields = holder.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.FieldType.IsGenericType).ToDictionary(f => f.Name);
        Assert.Equal(service.Methods.Select(m => m.Name).Order(), fields.Keys.Order());
        foreach (var m in service.Methods)
        {
            dynamic method = fields[m.Name].GetValue(null)!;
            Assert.Equal($"/{service.FullName}/{m.Name}", (string)method.FullName);
            var expected = (m.IsClientStreaming, m.IsServerStreaming) switch
            {
                (false, false) => MethodType.Unary,
                (false, true) => MethodType.ServerStreaming,
                (true, false) => MethodType.ClientStreaming,
                _ => throw new InvalidOperationException($"{m.FullName}: bidirectional streaming is not supported by Cluster.Rpc"),
            };
            Assert.Equal(expected, (MethodType)method.Type);
            var args = fields[m.Name].FieldType.GetGenericArguments();
            Assert.Equal(m.InputType.ClrType, args[0]);
            Assert.Equal(m.OutputType.ClrType, args[1]);
        }
    }

    [Fact]
    public void Every_field_of_the_cluster_protos_has_a_comment()
    {
        var undocumented = new List<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(ExternalTools.RepoRoot, "protos", "llmcluster", "v1"), "*.proto"))
        {
            var lines = File.ReadAllLines(file);
            for (var i = 1; i < lines.Length; i++)
                if (FieldLine().IsMatch(lines[i]) && !lines[i - 1].TrimStart().StartsWith("//") && !lines[i].Contains("//"))
                    undocumented.Add($"{Path.GetFileName(file)}:{i + 1}: {lines[i].Trim()}");
        }
        Assert.True(undocumented.Count == 0, "fields without a comment:\n" + string.Join('\n', undocumented));
    }

    [GeneratedRegex(@"^\s*(repeated\s+|optional\s+)?(map<[^>]+>|[A-Za-z_][\w.]*)\s+\w+\s*=\s*\d+\s*;")]
    private static partial Regex FieldLine();
}
