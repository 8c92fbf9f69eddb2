"""A Python client for Strivve's CardSavr REST API (no Django dependency)."""
