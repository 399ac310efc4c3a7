"""Helpers behind `M2FImageProcessor`: image conversion and geometry, label encoding, post-processing."""
