"""vidmill training."""
