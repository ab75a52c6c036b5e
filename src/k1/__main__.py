"""`python -m k1 ...` runs the `k1` command line (and `torchrun -m k1 ...`)."""

from k1.cli import main

main()
