"""Build helpers for setup.py (standard library only; not part of the installed package)."""
