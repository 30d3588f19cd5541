"""What a worker runs for a seed: the builtin VSR simulation, an external binary, or a plugin."""
