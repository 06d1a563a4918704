"""Boot entry point on the board: run the deployed app (``app.py``) with the board file."""

import app

app.main()
