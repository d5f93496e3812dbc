"""`python -m reranker_template.cli`: the supervisord programs run the CLI this way."""

import sys

from reranker_template.cli import main

sys.exit(main())
