"""Benchmarks (`make bench`): renewbot's paths against anchors measured in the same run."""
