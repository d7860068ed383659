"""The market-data path: sessions, books, seeds, the REST pace."""
