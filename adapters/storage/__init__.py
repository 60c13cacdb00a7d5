"""Storage adapter: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL (asyncpg).

The only package that imports sqlalchemy or alembic. Must not hold renewal logic.
"""
