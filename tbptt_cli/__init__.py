"""tbptt: prepare sequence data for truncated backpropagation through time."""

__version__ = "0.1.0"
