"""`python -m marketplace serve`: the same commands as `hashgrid marketplace`."""

from marketplace.cli import main

main()
