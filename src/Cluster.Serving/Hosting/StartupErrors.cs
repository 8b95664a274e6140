using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Cluster.Serving.Hosting;

/// <summary>A service that cannot start says so in one line a person can act on (never a stack trace).</summary>
public static partial class StartupErrors
{
    /// <summary>The message for <paramref name="e"/>: a port in use names the port and the option that moves it.</summary>
    public static string Describe(Exception e, ServiceOptions options)
    {
        if (IsAddressInUse(e))
        {
            int? port = BoundPort().Match(e.Message) is { Success: true } m ? int.Parse(m.Groups[1].Value) : null;
            string option = port == options.HttpPort ? "--http-port" : "--grpc-port";
            int shown = port ?? options.GrpcPort;
            return $"port {shown} on {options.Host} is already in use (the {options.Role.Name()}'s {option}): stop what holds it, or choose another port with {option}";
        }
        return e.Message;
    }

    public static bool IsAddressInUse(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } || x.GetType().Name == "AddressInUseException") return true;
        return false;
    }

    [GeneratedRegex(@":(\d+)\b")]
    private static partial Regex BoundPort();
}
