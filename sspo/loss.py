"""SSPO policy loss (being written)."""
