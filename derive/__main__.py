"""``python -m derive`` is the ``derive`` command."""

from .cli import main

raise SystemExit(main())
