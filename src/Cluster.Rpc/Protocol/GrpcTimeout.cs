using System.Globalization;

namespace Cluster.Rpc.Protocol;

/// <summary>
/// The grpc-timeout header: "TimeoutValue TimeoutUnit", a positive integer of at most 8 digits
/// followed by one of H, M, S, m (milli), u (micro), n (nano) (gRPC over HTTP/2 spec).
/// </summary>
internal static class GrpcTimeout
{
    private const long MaxValue = 99_999_999;

    /// <summary>Parses a header value; false for anything the spec does not allow.</summary>
    public static bool TryParse(string? value, out TimeSpan timeout)
    {
        timeout = default;
        if (string.IsNullOrEmpty(value) || value.Length < 2 || value.Length > 9) return false;
        var digits = value.AsSpan(0, value.Length - 1);
        foreach (var c in digits) if (c is < '0' or > '9') return false;
        var n = long.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture);
        double ticks = value[^1] switch
        {
            'H' => n * (double)TimeSpan.TicksPerHour,
            'M' => n * (double)TimeSpan.TicksPerMinute,
            'S' => n * (double)TimeSpan.TicksPerSecond,
            'm' => n * (double)TimeSpan.TicksPerMillisecond,
            'u' => n * 10.0,
            'n' => Math.Ceiling(n / 100.0),
            _ => double.NaN,
        };
        if (double.IsNaN(ticks)) return false;
        timeout = ticks >= TimeSpan.MaxValue.Ticks ? TimeSpan.MaxValue : TimeSpan.FromTicks((long)ticks);
        return true;
    }

    /// <summary>
    /// Formats a positive timeout with the finest unit whose value fits in 8 digits, rounding up
    /// so the server never sees a shorter deadline than the client's.
    /// </summary>
    public static string Format(TimeSpan timeout)
    {
        var ticks = Math.Max(1, timeout.Ticks);
        (long perUnit, char unit)[] units =
        [
            (1, 'n'), // handled specially below: 1 tick = 100 ns
            (10, 'u'),
            (TimeSpan.TicksPerMillisecond, 'm'),
            (TimeSpan.TicksPerSecond, 'S'),
            (TimeSpan.TicksPerMinute, 'M'),
            (TimeSpan.TicksPerHour, 'H'),
        ];
        foreach (var (perUnit, unit) in units)
        {
            var value = unit == 'n' ? ticks * 100 : (ticks + perUnit - 1) / perUnit;
            if (value <= MaxValue) return value.ToString(CultureInfo.InvariantCulture) + unit;
        }
        return MaxValue.ToString(CultureInfo.InvariantCulture) + "H";
    }
}
