using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Cluster.Gateway.OpenAi;

/// <summary>
/// The web playground at "/": plain HTML, JS and CSS embedded in the gateway (no build step, nothing
/// fetched from elsewhere), talking to the OpenAI-compatible API of the same origin.
/// </summary>
internal static class Playground
{
    private static readonly (string Path, string Resource, string Type)[] Files =
    [
        ("/", "playground.index.html", "text/html; charset=utf-8"),
        ("/playground.js", "playground.playground.js", "text/javascript; charset=utf-8"),
        ("/playground.css", "playground.playground.css", "text/css; charset=utf-8"),
    ];

    public static void Map(IEndpointRouteBuilder endpoints)
    {
        foreach (var (path, resource, type) in Files)
        {
            var bytes = Read(resource);
            endpoints.MapGet(path, () => Results.Bytes(bytes, type));
        }
    }

    private static byte[] Read(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded resource '{name}' is missing from the gateway build");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
