"""What every service does the same way: config, logging, gRPC bootstrap, metrics,
object store, jobs."""
