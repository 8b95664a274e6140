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
            var sub = new Command(role.Name(), Help(role)) { TreatUnmatchedTokensAsErrors = false };
            sub.SetAction(r => ServiceHost.RunAsync(role, [.. r.UnmatchedTokens], factory).GetAwaiter().GetResult());
            cmd.Subcommands.Add(sub);
        }
        return cmd;
    }

    /// <summary>The role's options with their defaults (ServiceOptions is parsed by the host, not by
    /// System.CommandLine, so `serve ROLE --help` lists them here).</summary>
    public static string Help(ServiceRole role)
    {
        var defaults = new ServiceOptions(role);
        var lines = ServiceOptions.For(role).Select(x =>
        {
            var value = x.Property.GetValue(defaults);
            string shown = value is null or "" ? "" : $" (default: {value})";
            return $"  {x.Option.Name,-16} {x.Option.Help}{shown}";
        });
        return $"run the {role.Name()} service\n\nOptions (each also from LLM_<NAME>, e.g. --grpc-port = LLM_GRPC_PORT):\n{string.Join("\n", lines)}";
    }
}
