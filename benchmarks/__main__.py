"""``python -m benchmarks``: run every scenario for every contender on DynamoDB Local."""

from benchmarks.run import main

raise SystemExit(main())
