using Cluster.Serving.Hosting;

return await ServiceHost.RunAsync(ServiceRole.Gateway, args, Cluster.Gateway.GatewayService.CreateAsync);
