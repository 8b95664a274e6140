using Cluster.Serving.Hosting;

return await ServiceHost.RunAsync(ServiceRole.Prefill, args, Cluster.Prefill.PrefillService.CreateAsync);
