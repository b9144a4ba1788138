"""Network services in front of the verifier."""
