using Cluster.Engine.Kernels;
using Xunit;

namespace Cluster.Engine.Tests.Kernels;

public sealed class WorkerTeamTests
{
    private sealed class CountParts : IPartedWork
    {
        public int Runs;
        public void Run(int part) => Interlocked.Increment(ref Runs);
    }

    /// <summary>Found by a CI run that hung in a model's Dispose: a helper still polling after a call
    /// drained its wake-ups, Dispose's among them, and then waited for a wake-up that never came. Dispose
    /// right after a call (while the helpers poll) must return.</summary>
    [Fact]
    public void Dispose_right_after_a_call_returns_and_every_part_ran()
    {
        for (int i = 0; i < 300; i++)
        {
            var team = new WorkerTeam(3);
            var work = new CountParts();
            Assert.True(team.TryAcquire());
            team.Run(work, 8);
            team.Release();
            Assert.Equal(8, work.Runs);
            var disposed = Task.Run(team.Dispose);
            Assert.True(disposed.Wait(TimeSpan.FromSeconds(10)), $"Dispose hung after call {i}");
        }
    }
}
