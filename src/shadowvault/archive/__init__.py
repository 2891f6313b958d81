"""The archive layer: walk a (shadow) tree into the repository, and lay a snapshot tree back down."""
