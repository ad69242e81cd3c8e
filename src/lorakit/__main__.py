"""`python -m lorakit` == the `lorakit` command (torchrun uses this form: `torchrun -m lorakit train ...`)."""

from lorakit.cli.main import main

main()
