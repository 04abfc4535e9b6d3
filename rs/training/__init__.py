"""Training the change network: its configuration (``config``), kept light so the command line
reads its defaults without loading torch."""
