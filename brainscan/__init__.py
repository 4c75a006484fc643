"""brainscan: brain MRI tumour screening as a batch job service."""

__version__ = "0.1.0"
