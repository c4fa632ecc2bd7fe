"""Operator scripts: local network, deploy, governance, explorer and the demo (each a typer `app`)."""
