"""Schema migrations, shipped inside the package as codegraph_store.migrations."""
