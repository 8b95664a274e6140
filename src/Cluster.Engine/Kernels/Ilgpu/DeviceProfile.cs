using System.Diagnostics;
using ILGPU.Runtime;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// Where a device's time goes, per backend operation (LLMCLUSTER_DEVICE_PROFILE=1): each measured
/// operation waits for the device before and after itself, so the totals are device time per kind of
/// work (and the waits slow the run down: profile, then measure without it). The table goes to stderr
/// when the backend is disposed.
/// </summary>
internal sealed class DeviceProfile(Accelerator accelerator)
{
    private readonly Dictionary<string, (double Seconds, long Calls)> _totals = [];

    public static bool Enabled => Environment.GetEnvironmentVariable("LLMCLUSTER_DEVICE_PROFILE") == "1";

    public Scope Measure(string operation)
    {
        accelerator.Synchronize();
        return new Scope(this, operation, Stopwatch.GetTimestamp());
    }

    private void Add(string operation, long start)
    {
        accelerator.Synchronize();
        var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var (total, calls) = _totals.GetValueOrDefault(operation);
        _totals[operation] = (total + seconds, calls + 1);
    }

    public void Report(TextWriter to)
    {
        if (_totals.Count == 0) return;
        to.WriteLine($"device profile ({accelerator.Name}): operation, calls, total ms, mean us");
        foreach (var (op, (seconds, calls)) in _totals.OrderByDescending(p => p.Value.Seconds))
            to.WriteLine($"  {op,-40} {calls,8} {seconds * 1e3,10:F2} {seconds * 1e6 / calls,10:F1}");
    }

    /// <summary>Ends the measurement on dispose; a default Scope (profiling off) does nothing.</summary>
    public readonly struct Scope(DeviceProfile? profile, string operation, long start) : IDisposable
    {
        public void Dispose() => profile?.Add(operation, start);
    }
}
