"""The version of metaprune (its own module, so that every floor can read it without importing the root package)."""

__version__ = "0.1.0"
