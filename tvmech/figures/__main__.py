from tvmech.pipeline.cli import main

raise SystemExit(main())
