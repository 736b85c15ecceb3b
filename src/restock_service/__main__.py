from restock_service.cli import main

raise SystemExit(main())
