"""High availability: the hot-standby lease."""
