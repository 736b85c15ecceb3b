-- The Alembic revision of the schema (the table is missing before the first migration).
SELECT version_num FROM alembic_version
