from extract.cli import main

raise SystemExit(main())
