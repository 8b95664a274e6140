using Cluster.Engine.Loaders;

namespace LlmCtl;

/// <summary>The one place where command failures become a message and an exit code: bad input is
/// reported in one line (exit 2), never as a stack trace.</summary>
internal static class CommandErrors
{
    /// <summary>What the server said, as a sentence (the status name only where the detail is not one).</summary>
    public static string Describe(Grpc.Core.RpcException e) => e.StatusCode switch
    {
        Grpc.Core.StatusCode.Unavailable => $"error: the cluster cannot be reached or cannot serve now ({e.Status.Detail}); is it up at --endpoint?",
        Grpc.Core.StatusCode.DeadlineExceeded or Grpc.Core.StatusCode.Cancelled => $"error: {e.Status.Detail} ({e.StatusCode})",
        _ => $"error: {e.Status.Detail}",
    };

    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Grpc.Core.RpcException e)
        {
            Console.Error.WriteLine(Describe(e));
            return 3;
        }
        catch (Exception e) when (e is ModelFormatException or ArgumentException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or IOException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }
}
