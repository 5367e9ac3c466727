"""The model floor's error, in a module of its own so that reading the registry (listing
versions, resolving aliases) does not import XGBoost and scikit-learn with the bundle."""

from __future__ import annotations


class BundleError(ValueError):
    """A directory that is not a churnguard bundle this version can read.

    ``reason`` is a short description that names no path and quotes nothing from the files (the
    API's unauthenticated ``/readyz`` shows it); the message has the details.
    """

    def __init__(self, message: str, reason: str = "not a churnguard bundle") -> None:
        super().__init__(message)
        self.reason = reason
