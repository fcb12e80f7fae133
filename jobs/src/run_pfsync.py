"""Databricks task wrapper: run the pfsync binary from a Unity Catalog volume and pass its exit code
through, so the task fails (and the job's retry policy applies) exactly when pfsync says so.

Usage (a spark_python_task): run_pfsync.py <path to pfsync binary> <pfsync arguments...>
The API key is read by pfsync from PURPLEFLEA_API_KEY, set from the secret scope in the job definition.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile


def main(argv):
    if len(argv) < 2:
        print("usage: run_pfsync.py <pfsync binary> <arguments...>", file=sys.stderr)
        return 2
    binary, args = argv[1], argv[2:]
    # Volumes are mounted without the exec bit: copy to local disk and mark it executable.
    local = os.path.join(tempfile.mkdtemp(prefix="pfsync-"), "pfsync")
    shutil.copyfile(binary, local)
    os.chmod(local, os.stat(local).st_mode | stat.S_IXUSR)
    proc = subprocess.run([local, *args])
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
