from rlvr_explore.cli import main

raise SystemExit(main())
