"""`python -m turnstile.clients.cli ...` is the `turnstile` command."""
import sys

from . import main

sys.exit(main())
