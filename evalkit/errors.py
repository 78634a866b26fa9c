class EvalkitError(Exception):
    """A problem with the user's input or environment: the CLI prints its message as one line and exits non-zero."""
