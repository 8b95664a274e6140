using Cluster.Serving.Hosting;

return await ServiceHost.RunAsync(ServiceRole.CacheManager, args, Cluster.CacheManager.CacheManagerService.CreateAsync);
