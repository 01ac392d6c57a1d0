"""Monitoring: how the served model and the data it meets drift from what it was trained on."""
