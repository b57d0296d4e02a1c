"""Benchmarks: figures printed by commands, never asserted by timed tests."""
