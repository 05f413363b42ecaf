"""`python -m k8py` runs the same CLI as the `k8py` console script."""

from k8py.cli import main

main()
