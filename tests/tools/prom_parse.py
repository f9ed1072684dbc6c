#!/usr/bin/env python3
"""Parse Prometheus text exposition with prometheus_client's parser (independent of convenor).

Reads the exposition on stdin and prints JSON:
  {"families": {"<name>": "<type>"}, "samples": [{"name", "labels", "value"}]}
Exits non-zero when the text does not parse.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    families = {}
    samples = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": s.value})
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
