using Cluster.Serving.Hosting;

namespace LlmCtl.Commands;

/// <summary>
/// Keeps `llmctl up`'s services running: a service whose process died is started again with the same
/// arguments and ports, after a backoff that doubles with each restart in a row (1 s up to 30 s) and
/// resets once the service has stayed up for a minute, so a crash loop does not spin. Each death and
/// restart is one log line.
/// </summary>
internal sealed class ServiceSupervisor(LocalCluster cluster)
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StableAfter = TimeSpan.FromMinutes(1);
    // By reference: a record's equality would change when its process is replaced.
    private readonly Dictionary<LocalCluster.Service, State> _states = new(ReferenceEqualityComparer.Instance);

    private sealed class State
    {
        public int RestartsInARow;
        public DateTime? RestartAt;
        public DateTime StartedAt = DateTime.UtcNow;
    }

    /// <summary>Looks at every service once: notes deaths, restarts those whose backoff has passed.</summary>
    public void Check()
    {
        var now = DateTime.UtcNow;
        foreach (var service in cluster.Services)
        {
            var state = _states.TryGetValue(service, out var s) ? s : _states[service] = new State();
            if (!service.Process.HasExited)
            {
                if (state.RestartsInARow > 0 && now - state.StartedAt > StableAfter) state.RestartsInARow = 0;
                continue;
            }
            if (state.RestartAt is null)
            {
                var delay = TimeSpan.FromSeconds(Math.Min(MaxBackoff.TotalSeconds, Math.Pow(2, state.RestartsInARow)));
                state.RestartAt = now + delay;
                Console.Error.WriteLine($"{service.Role.Name()} (pid {service.Process.Id}) exited with code {service.Process.ExitCode}; restarting it in {delay.TotalSeconds:F0} s");
            }
            else if (now >= state.RestartAt)
            {
                cluster.Restart(service);
                state.RestartsInARow++;
                state.RestartAt = null;
                state.StartedAt = now;
                Console.Error.WriteLine($"{service.Role.Name()} restarted (pid {service.Process.Id}, restart {state.RestartsInARow} in a row)");
            }
        }
    }
}
