using Cluster.Serving.Hosting;

return await ServiceHost.RunAsync(ServiceRole.Decode, args, Cluster.Decode.DecodeService.CreateAsync);
