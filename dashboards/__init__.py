"""vidmill dashboards."""
