"""Record what the venue sent (``run --record``) and replay it (``replay``)."""
