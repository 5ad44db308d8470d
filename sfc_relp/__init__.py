"""sfc-relp: sparse feature circuits with relevance patching (RelP)."""

__version__ = "0.1.0"
