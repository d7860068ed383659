"""Partner features: credentials and signing, private channels, allowances."""
