"""Operations: Prometheus metrics, the health endpoint, logging."""
