"""Hashgrid core: what every part imports (config, chain client, specs and hashing, signing, errors, CLI)."""

__version__ = "0.1.0"
