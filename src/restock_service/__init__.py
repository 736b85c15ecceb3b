"""restock-service: adds a cancelled order's synced stock back, exactly once per order."""

__version__ = "0.1.0"
