"""vidmill model."""
