"""`python -m reportgen ...`: the same command as `reportgen ...` (for an environment whose
scripts folder is not on PATH)."""
from .cli import main

main()
