"""``python -m optibase_edge``: the ``optibase-edge`` command."""

from ._cli import main

raise SystemExit(main())
