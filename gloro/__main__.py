"""`python -m gloro`: the command line."""

from gloro.cli import main

raise SystemExit(main())
