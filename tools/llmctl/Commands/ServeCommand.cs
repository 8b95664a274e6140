using System.CommandLine;
using Cluster.Serving.Hosting;

namespace LlmCtl.Commands;

/// <summary>`llmctl serve ROLE [options]`: runs one service in this process, with the options and
/// LLM_* environment of its own executable (docs/SERVICES.md). `llmctl up` starts these.</summary>
internal static class ServeCommand
{
    public static readonly IReadOnlyDictionary<ServiceRole, ServiceHost.Factory> Factories = new Dictionary<ServiceRole, ServiceHost.Factory>
    {
        [ServiceRole.Gateway] = Cluster.Gateway.GatewayService.CreateAsync,
        [ServiceRole.Prefill] = Cluster.Prefill.PrefillService.CreateAsync,
        [ServiceRole.Decode] = Cluster.Decode.DecodeService.CreateAsync,
        [ServiceRole.CacheManager] = Cluster.CacheManager.CacheManagerService.CreateAsync,
    };

    public static Command Create()
    {
        var cmd = new Command("serve", "run one service of the cluster in this process (options as in docs/SERVICES.md)");
        foreach (var (role, factory) in Factories)
        {
            var sub = new Command(role.Name(), $"run the {role.Name()} service") { TreatUnmatchedTokensAsErrors = false };
            sub.SetAction(r => ServiceHost.RunAsync(role, [.. r.UnmatchedTokens], factory).GetAwaiter().GetResult());
            cmd.Subcommands.Add(sub);
        }
        return cmd;
    }
}
