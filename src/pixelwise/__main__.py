"""`python -m pixelwise ...` (what `torchrun ... -m pixelwise train ...` runs): the `pixelwise` command."""

from pixelwise.cli import main

main()
