"""Default configuration, shipped inside the package as codegraph_store.defaults."""
