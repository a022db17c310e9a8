"""Unsharing: one file per method, and a registry {name: method}; snapshots are kept for contrastive."""
