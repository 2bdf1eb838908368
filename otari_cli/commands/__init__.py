"""The commands: one module per resource; each command parses, calls, renders."""
