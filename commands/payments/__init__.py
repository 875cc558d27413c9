"""Payment processing: the provider port, routing, resilience and the process manager."""
