using Cluster.Engine.Loaders;

namespace LlmCtl;

/// <summary>The one place where command failures become a message and an exit code: bad input is
/// reported in one line (exit 2), never as a stack trace.</summary>
internal static class CommandErrors
{
    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Grpc.Core.RpcException e)
        {
            Console.Error.WriteLine($"error: {e.StatusCode}: {e.Status.Detail}");
            return 3;
        }
        catch (Exception e) when (e is ModelFormatException or ArgumentException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or IOException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }
}
