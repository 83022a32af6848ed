"""Built-in method plugins (installed as cmr_bench.methods). One module per method; each
registers its class with @cmr_bench.registry.register_method. Modules starting with '_'
hold shared building blocks, not plugins."""
