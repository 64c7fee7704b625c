"""Subcommands of the ``vqaudio`` CLI: one module each, exposing ``register(subparsers)``."""
