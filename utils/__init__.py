"""Machinery shared by the scripts: config, data, training maths, state, runtime."""
