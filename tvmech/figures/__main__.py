from tvmech.figures.run import main

raise SystemExit(main())
