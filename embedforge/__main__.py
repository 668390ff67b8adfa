"""`python -m embedforge` is the `embedforge` command."""

from embedforge.cli.main import main

main()
