"""restock-service: adds a cancelled order's synced stock back, exactly once per order."""

from restock_service.logs import install_logger_class

__version__ = "0.1.0"

# Before any of our modules creates its logger at import time.
install_logger_class()
