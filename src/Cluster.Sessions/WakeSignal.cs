namespace Cluster.Sessions;

/// <summary>
/// A reusable wake-up for one waiter: take <see cref="Next"/>, check for work, then await the task;
/// a <see cref="Set"/> after the take completes it, so no wake-up between check and wait is lost.
/// </summary>
internal sealed class WakeSignal
{
    private TaskCompletionSource _next = New();

    public Task Next => Volatile.Read(ref _next).Task;

    public void Set() => Interlocked.Exchange(ref _next, New()).TrySetResult();

    private static TaskCompletionSource New() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
