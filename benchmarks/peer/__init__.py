"""Peer libraries the benchmarks compare against, fed our preprocessed arrays."""
