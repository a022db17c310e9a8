"""Data: loading raw interactions, the seeded split, the sharing masks, request files, synthetic data."""
