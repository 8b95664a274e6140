namespace Cluster.Serving.Hosting;

/// <summary>Input from a caller (a client or a peer service) that cannot be served as sent; the message
/// names the field and says why. <see cref="StatusMapping"/> makes it INVALID_ARGUMENT.</summary>
public sealed class InvalidRequestException(string message) : Exception(message);
