"""otari: the operator CLI for the otari gateway."""
