"""The math that server and clients share: LightGCN propagation, losses, row-wise Adam, negative sampling.

Everything is plain tensor code so the same functions run on CPU and CUDA, and so the vectorized
engine and the per-client reference loop compute exactly the same things.
"""
