using System.Net;
using System.Net.Sockets;

namespace Cluster.Tests;

/// <summary>A loopback port nothing listens on now (the OS picks it), for servers a test starts.</summary>
public static class FreePorts
{
    public static int Next()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
