using System.Runtime.CompilerServices;

// The command classes are internal; the engine tests run them in-process (tests/Cluster.Engine.Tests/Tokenizers/TokenizeCommandTests.cs).
[assembly: InternalsVisibleTo("Cluster.Engine.Tests")]
