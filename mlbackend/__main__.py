from mlbackend.faces import main

raise SystemExit(main())
