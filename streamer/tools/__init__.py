"""Command-line tools beside the daemon: ``tail``, the README synopsis, a local Kafka."""
