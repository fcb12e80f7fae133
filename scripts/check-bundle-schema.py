#!/usr/bin/env python3
"""Check the Databricks bundle in jobs/ against the bundle's own job schema, as each target deploys it.

Every job in jobs/resources/*.yml, and again with each target's overrides from jobs/databricks.yml merged in
(the prod target adds the failure notifications), goes through the `databricks-bundles` package's Job model,
which refuses unknown fields and enum values at any depth (a misspelt `run_if`, a field in the wrong place):
what the Rust test in tests/it/jobs_bundle.rs does not know about. Then what `databricks bundle validate`
would refuse without a workspace: a `${var.NAME}` that is not declared, a `{{job.parameters.NAME}}` the job
does not declare, a variable without a default besides the two that differ per workspace and cloud (the
`dev` target must deploy with `--var warehouse=... --var node_type_id=...` alone), no minimum CLI version.
Needs `databricks-bundles` and `pyyaml` (.ci/run installs them into a venv of their own).
Usage: scripts/check-bundle-schema.py"""

import copy
import pathlib
import re
import sys

import yaml
from databricks.bundles.jobs import Job

JOBS = pathlib.Path(__file__).resolve().parent.parent / "jobs"
# The variables a deployment must give: where the tables live, and a node type of its cloud.
REQUIRED = {"warehouse", "node_type_id"}

errors = []
checked = 0


def merge(base, override):
    """A target's override over a resource, as the bundle merges mappings (keys of the override win)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_job(where, job):
    global checked
    checked += 1
    try:
        Job.from_dict(job)
    except Exception as e:  # the model's own message names the field
        errors.append(f"{where}: {e}")
    declared = {p["name"] for p in job.get("parameters", [])}
    for used in sorted(set(re.findall(r"\{\{job\.parameters\.([A-Za-z0-9_]+)\}\}", yaml.safe_dump(job)))):
        if used not in declared:
            errors.append(f"{where}: {{{{job.parameters.{used}}}}} is not a parameter of the job")


root_text = (JOBS / "databricks.yml").read_text()
root = yaml.safe_load(root_text)
variables = root.get("variables", {})
texts = [root_text]
jobs = {}
for path in sorted((JOBS / "resources").glob("*.yml")):
    text = path.read_text()
    texts.append(text)
    for name, job in yaml.safe_load(text)["resources"]["jobs"].items():
        jobs[name] = job
        check_job(f"{path.name}: job {name}", job)

for target, spec in (root.get("targets") or {}).items():
    overrides = ((spec or {}).get("resources") or {}).get("jobs") or {}
    for name, override in overrides.items():
        if name not in jobs:
            errors.append(f"databricks.yml: target {target} overrides job {name}, which no resource file declares")
            continue
        check_job(f"target {target}: job {name}", merge(jobs[name], override))
    for name in ((spec or {}).get("variables") or {}):
        if name not in variables:
            errors.append(f"databricks.yml: target {target} sets variable {name}, which is not declared")

for used in sorted({v for t in texts for v in re.findall(r"\$\{var\.([A-Za-z0-9_]+)\}", t)}):
    if used not in variables:
        errors.append(f"${{var.{used}}} is used but not declared in databricks.yml")
required = {name for name, v in variables.items() if "default" not in (v or {}) and "lookup" not in (v or {})}
if required != REQUIRED:
    errors.append(
        f"variables without a default: {sorted(required)}; expected {sorted(REQUIRED)} (every other one must "
        "have a default so `-t dev` deploys with those two alone)"
    )
if not str((root.get("bundle") or {}).get("databricks_cli_version", "")).startswith(">="):
    errors.append("bundle.databricks_cli_version: name the oldest Databricks CLI the bundle works with")

for e in errors:
    print(e, file=sys.stderr)
print(f"bundle schema: {checked} jobs checked (resources and target overrides), {len(errors)} errors")
sys.exit(1 if errors or not checked else 0)
