"""Training data: latent shards, packing, rank balancing and the stateful loader."""
