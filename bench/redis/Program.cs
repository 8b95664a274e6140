// Throughput of StackExchange.Redis and our session store on it against a running redis-server,
// on one multiplexer (one connection), sequential (await each) and pipelined (many in flight). Usage:
//   dotnet run -c Release --project bench/redis -- PORT [SECONDS_PER_CASE]
// bench/redis/run.sh starts a private server and runs redis-benchmark on the same cases.
using System.Diagnostics;
using System.Globalization;
using Cluster.Sessions;
using StackExchange.Redis;

int port = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 6379;
double seconds = args.Length > 1 ? double.Parse(args[1], CultureInfo.InvariantCulture) : 3;
const int Window = 100; // commands in flight when pipelined, like redis-benchmark -P 100

await using var redis = await RedisConnector.ConnectAsync($"127.0.0.1:{port},asyncTimeout=30000,allowAdmin=true");
var db = redis.GetDatabase();
await db.ExecuteAsync("FLUSHDB");
var store = new RedisSessionStore(redis, TimeSpan.FromHours(1), "bench:");
await db.StringSetAsync("bench:k", "value-of-some-bytes");
await db.HashSetAsync("bench:h", [new("model", "stories15M"), new("status", "running"), new("generated_tokens", "17")]);
await store.TryCreateAsync(new SessionInfo { Id = "s", Model = "stories15M", Parameters = new Dictionary<string, string> { ["seed"] = "42" } });

long tokenIndex = 0, streamId = 0;
var cases = new (string Name, Func<Task> Op)[]
{
    ("PING", () => db.PingAsync()),
    ("GET", () => db.StringGetAsync("bench:k")),
    ("HSET 1 field", () => db.HashSetAsync("bench:h", "generated_tokens", "18")),
    ("HGETALL 3 fields", () => db.HashGetAllAsync("bench:h")),
    ("XADD explicit id", () => db.StreamAddAsync("bench:x", [new("i", "1"), new("t", "2")], messageId: Interlocked.Increment(ref streamId).ToString(CultureInfo.InvariantCulture) + "-0")),
    ("store.GetAsync (HGETALL + decode)", () => store.GetAsync("s")),
    ("store.UpdateAsync (EVALSHA: HSET+PEXPIRE x2+ZADD)", () => store.UpdateAsync("s", new SessionUpdate { GeneratedTokens = 5 })),
    ("store.TryAppendTokenAsync (EVALSHA: XADD+PEXPIRE x2+ZADD+PUBLISH)", () => store.TryAppendTokenAsync("s", new TokenEntry(Interlocked.Increment(ref tokenIndex), 7, "x"))),
};

Console.WriteLine($"# load: {File.ReadAllText("/proc/loadavg").Trim()}  cores: {Environment.ProcessorCount}");
Console.WriteLine($"{"case",-58} {"sequential ops/s",18} {"pipelined ops/s (" + Window + " in flight)",32}");
foreach (var (name, op) in cases)
{
    for (int i = 0; i < 2000; i++) await op(); // warm-up (JIT, pools)
    double seq = await Sequential(op, seconds);
    double pipe = await Pipelined(op, seconds);
    Console.WriteLine($"{name,-58} {seq,18:N0} {pipe,32:N0}");
}
Console.WriteLine($"# load: {File.ReadAllText("/proc/loadavg").Trim()}");

static async Task<double> Sequential(Func<Task> op, double seconds)
{
    var sw = Stopwatch.StartNew();
    long n = 0;
    while (sw.Elapsed.TotalSeconds < seconds)
    {
        for (int i = 0; i < 256; i++) await op();
        n += 256;
    }
    return n / sw.Elapsed.TotalSeconds;
}

// One issuing loop keeps Window operations in flight: it starts a new one as soon as the
// oldest completes, so the order of issue (what the token log relies on) is kept.
static async Task<double> Pipelined(Func<Task> op, double seconds)
{
    var inflight = new Queue<Task>(Window);
    var sw = Stopwatch.StartNew();
    long n = 0;
    while (sw.Elapsed.TotalSeconds < seconds)
    {
        while (inflight.Count < Window) inflight.Enqueue(op());
        await inflight.Dequeue();
        n++;
    }
    while (inflight.Count > 0) { await inflight.Dequeue(); n++; }
    return n / sw.Elapsed.TotalSeconds;
}
