#!/usr/bin/env python3
"""Check every job in jobs/resources/*.yml against the bundle's own job schema: the `databricks-bundles`
package's Job model refuses unknown fields and enum values at any depth (a misspelt `run_if`, a field in the
wrong place), which the Rust test in tests/it/jobs_bundle.rs does not know about. Needs `databricks-bundles`
and `pyyaml` (.ci/run installs them into a venv of their own). Usage: scripts/check-bundle-schema.py"""

import pathlib
import sys

import yaml
from databricks.bundles.jobs import Job

failed = 0
checked = 0
for path in sorted(pathlib.Path(__file__).resolve().parent.parent.glob("jobs/resources/*.yml")):
    for name, job in yaml.safe_load(path.read_text())["resources"]["jobs"].items():
        checked += 1
        try:
            Job.from_dict(job)
        except Exception as e:  # the model's own message names the field
            failed += 1
            print(f"{path.name}: job {name}: {e}", file=sys.stderr)
print(f"bundle schema: {checked} jobs checked, {failed} with errors")
sys.exit(1 if failed or not checked else 0)
