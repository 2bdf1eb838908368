"""Where state lives: the engine and sessions, the tables, Alembic migrations, secret files.

May import: `settings`, `errors`, `jsonio`.
Imported by: every package that reads or writes the database.
"""
