"""Datasets: the HDF5 format (format.py) and one small module per source."""
