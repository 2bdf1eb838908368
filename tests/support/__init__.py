"""Test support: fake provider and platform servers on loopback, gateway builders, factories.

Imported by tests only; nothing here is collected as a test.
"""
