from ambient_bench.cli import main

raise SystemExit(main())
