using System.CommandLine;
using LlmCtl.Commands;

var root = new RootCommand("llmctl: run, evaluate and benchmark LLM Cluster models from the command line");
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(PerplexityCommand.Create());
root.Subcommands.Add(ConvertCommand.Create());
root.Subcommands.Add(SynthCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(DeviceCheckCommand.Create());
root.Subcommands.Add(CalibrateCommand.Create());
root.Subcommands.Add(TokenizeCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(UpCommand.Create());
root.Subcommands.Add(ChatCommand.Create());
root.Subcommands.Add(SessionsCommand.Create());
return root.Parse(args).Invoke();
