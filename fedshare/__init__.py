"""FedShare: federated recommendation and unlearning with personalized data sharing."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedshare")
except PackageNotFoundError:  # run from a source tree that was not installed (the GPU machine)
    __version__ = "0+unknown"
