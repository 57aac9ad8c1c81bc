"""leanfit: find small, accurate image classifiers, and keep finding them as the data changes."""

__version__ = "0.1.0"
