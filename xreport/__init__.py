"""xreport: train medical-image classifiers and turn a checkpoint into a lab report."""
__version__ = "0.1.0"
