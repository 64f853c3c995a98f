"""Persistence: SQLAlchemy tables, database setup and migrations, repositories."""
