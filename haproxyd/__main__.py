from haproxyd.cli import main

raise SystemExit(main())
