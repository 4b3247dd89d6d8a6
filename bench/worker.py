"""Child-process entry of the harness: ``python -m bench.worker SCENARIO PARAMS_JSON``.

Runs one scenario and prints its ``BenchResult`` as one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys

from bench.scenarios import SCENARIOS
from gateway.runtime import tune_gc


def main() -> int:
    name, params = sys.argv[1], json.loads(sys.argv[2])
    tune_gc()  # as `edge-gateway run` does, so the figures are the product's
    result = SCENARIOS[name].run(params)
    sys.stdout.write(result.to_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
