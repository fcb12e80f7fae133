"""pfsync, packaged as a Python wheel.

The wheel carries the Rust binary in its scripts, as ruff and uv do: `pip install` puts `pfsync` on PATH,
and a shell runs it without Python. A Databricks `python_wheel_task` instead calls a Python function
in-process with `sys.argv`; that function is `main()` here, which finds the installed binary and runs it,
passing the exit code through so the task fails (and its retry policy applies) exactly when pfsync says so.

On Databricks, and on serverless above all where a task has no `spark_env_vars`, the Purple Flea key comes
from a Databricks secret: `PFSYNC_API_KEY_SECRET=scope/key`, as an environment variable or as a leading
task parameter, is read with the Databricks SDK and handed to the binary as `PURPLEFLEA_API_KEY`, in the
child's environment only. The key is never printed, logged or put on a command line.
"""

import os
import signal
import subprocess
import sys
import sysconfig

__all__ = ["main", "find_pfsync_bin", "SecretError"]

# Settings that name a Databricks secret (`scope/key`), and the variable the binary reads it from. A new
# credential the binary learns to read from its environment gets one line here.
SECRET_SETTINGS = {
    "PFSYNC_API_KEY_SECRET": "PURPLEFLEA_API_KEY",
    # For the `unity` build's vended credentials (DATABRICKS_HOST is taken from the SDK when unset).
    "PFSYNC_DATABRICKS_TOKEN_SECRET": "DATABRICKS_TOKEN",
}

# Keys of further agents for the live provider (`[[provider.agent_keys]] env = "PFSYNC_AGENT_KEY_<NAME>"`):
# `PFSYNC_AGENT_KEY_SECRET_<NAME>=scope/key` puts that secret into `PFSYNC_AGENT_KEY_<NAME>`.
AGENT_KEY_SECRET_PREFIX = "PFSYNC_AGENT_KEY_SECRET_"
AGENT_KEY_PREFIX = "PFSYNC_AGENT_KEY_"
# The same for several agents in one setting, as one bundle variable carries them (a task's parameter list
# cannot grow with a variable): `PFSYNC_AGENT_KEY_SECRETS=NAME=scope/key,NAME=scope/key`; empty for none.
AGENT_KEY_SECRETS = "PFSYNC_AGENT_KEY_SECRETS"


def secret_target(name):
    """The variable a secret setting fills, or None when `name` is no secret setting."""
    if name in SECRET_SETTINGS:
        return SECRET_SETTINGS[name]
    if name == AGENT_KEY_SECRETS:
        return AGENT_KEY_PREFIX + "*"
    suffix = name[len(AGENT_KEY_SECRET_PREFIX):] if name.startswith(AGENT_KEY_SECRET_PREFIX) else ""
    if suffix and all(c.isupper() or c.isdigit() or c == "_" for c in suffix):
        return AGENT_KEY_PREFIX + suffix
    return None


# pfsync's exit codes (README, "Exit codes"): 2 = configuration error, nothing touched, do not retry.
EXIT_CONFIG = 2
EXIT_INTERNAL = 1


class SecretError(Exception):
    """A secret setting is malformed or its secret cannot be read. The message never holds a secret."""

    def __init__(self, message, exit_code=EXIT_CONFIG):
        super().__init__(message)
        self.exit_code = exit_code


def find_pfsync_bin():
    """The path of the pfsync binary this package was installed with.

    pip installs the wheel's scripts into the environment's scripts folder; which one depends on how it was
    installed (a venv, `--user`, `--prefix`, `--target`, a Databricks cluster library), so ask the
    installed distribution's own file list first, then the usual places.
    """
    exe = "pfsync" + (sysconfig.get_config_var("EXE") or "")
    candidates = []
    try:
        from importlib import metadata

        for f in metadata.files("pfsync") or ():
            if f.name == exe and f.parent.name in ("bin", "Scripts"):
                candidates.append(str(f.locate()))
    except Exception:  # no metadata (run from a source tree): fall back to the scheme paths
        pass
    candidates.append(os.path.join(sysconfig.get_path("scripts"), exe))
    user_scheme = "nt_user" if os.name == "nt" else "posix_user"
    try:
        candidates.append(os.path.join(sysconfig.get_path("scripts", scheme=user_scheme), exe))
    except KeyError:
        pass
    candidates.append(os.path.join(os.path.dirname(sys.executable), exe))
    # `pip install --target DIR` puts the scripts in DIR/bin, beside the package.
    candidates.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin", exe))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "the pfsync binary is not installed next to this package (looked in: " + ", ".join(candidates) + ")"
    )


def split_settings(args):
    """Leading `PFSYNC_..._SECRET=scope/key` arguments, and the rest.

    A serverless task has no environment variables of its own, only parameters, so the settings may come
    first among them, like `env NAME=VALUE command`. Only known names are taken, and only before the first
    other argument, so nothing meant for pfsync is ever swallowed.
    """
    settings = {}
    i = 0
    while i < len(args):
        name, sep, value = args[i].partition("=")
        if not sep or secret_target(name) is None:
            break
        settings[name] = value
        i += 1
    return settings, args[i:]


def parse_ref(setting, ref):
    scope, sep, key = ref.partition("/")
    if not sep or not scope or not key or "/" in key or any(c.isspace() for c in ref):
        raise SecretError(f"{setting} must be SCOPE/KEY (a Databricks secret scope and key), got {ref!r}")
    return scope, key


def read_secret(setting, ref, client):
    """The secret's text, through the SDK's secrets API (`dbutils.secrets.get`)."""
    scope, key = parse_ref(setting, ref)
    try:
        value = client.dbutils.secrets.get(scope=scope, key=key)
    except UnicodeDecodeError:
        # Its message would quote bytes of the secret.
        raise SecretError(f"the secret {scope}/{key} ({setting}) is not UTF-8 text") from None
    except Exception as e:  # the SDK's errors name the scope and key, never a value
        missing = type(e).__name__ in ("NotFound", "ResourceDoesNotExist", "PermissionDenied", "Unauthenticated")
        raise SecretError(
            f"cannot read the secret {scope}/{key} ({setting}): {type(e).__name__}: {e}. Check that the scope "
            "and key exist and that the job's run-as identity has READ on the scope.",
            EXIT_CONFIG if missing else EXIT_INTERNAL,
        ) from None
    value = (value or "").strip()
    if not value:
        raise SecretError(f"the secret {scope}/{key} ({setting}) is empty")
    return value


def workspace_client():
    try:
        from databricks.sdk import WorkspaceClient
    except ImportError:
        raise SecretError(
            "PFSYNC_*_SECRET settings need the Databricks SDK (preinstalled on Databricks runtimes and "
            "serverless; elsewhere `pip install 'pfsync[databricks]'`)"
        ) from None
    try:
        return WorkspaceClient()
    except Exception as e:
        raise SecretError(f"cannot reach the Databricks workspace to read secrets: {type(e).__name__}: {e}") from None


def expand_agent_keys(setting, value):
    """`NAME=scope/key,...` as one `PFSYNC_AGENT_KEY_SECRET_<NAME>` setting each."""
    out = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        name, sep, ref = entry.partition("=")
        single = AGENT_KEY_SECRET_PREFIX + name
        if not sep or secret_target(single) is None:
            raise SecretError(
                f"{setting} must be NAME=SCOPE/KEY pairs, comma-separated, NAME in capitals, digits and _ "
                f"(e.g. WORKER1=purple-flea/agent_key_worker1), got {entry!r}"
            )
        if single in out:
            raise SecretError(f"{setting} names the agent key {name} twice")
        out[single] = ref
    return out


def child_environment(environ, settings):
    """The binary's environment: `environ` plus every secret that a setting names.

    A setting given as an argument wins over the same one in the environment. Returns the environment and
    the lines to tell the operator (which variable came from which secret; never a value).
    """
    wanted = {name: value for name, value in environ.items() if value and secret_target(name) is not None}
    wanted.update({name: ref for name, ref in settings.items()})
    several = wanted.pop(AGENT_KEY_SECRETS, None)
    if several:
        for name, ref in expand_agent_keys(AGENT_KEY_SECRETS, several).items():
            if name in wanted:
                raise SecretError(f"{name} and {AGENT_KEY_SECRETS} both name the agent key {name[len(AGENT_KEY_SECRET_PREFIX):]}")
            wanted[name] = ref
    env = dict(environ)
    for name in list(env):
        if secret_target(name) is not None:
            env.pop(name, None)  # the binary has no use for them
    if not wanted:
        return env, []
    for name, ref in wanted.items():
        parse_ref(name, ref)  # refuse a malformed setting before any network call
    client = workspace_client()
    notes = []
    for name, ref in wanted.items():
        target = secret_target(name)
        env[target] = read_secret(name, ref, client)
        notes.append(f"pfsync: {target} from the Databricks secret {ref}")
        if target == "DATABRICKS_TOKEN" and not env.get("DATABRICKS_HOST"):
            host = getattr(getattr(client, "config", None), "host", None)
            if host:
                env["DATABRICKS_HOST"] = host
    return env, notes


def run(binary, args, env):
    """Run the binary and return its exit code; a stop signal to this process is passed on to it."""
    child = subprocess.Popen([binary, *args], env=env)
    forwarded = {}

    def forward(signum, _frame):
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            forwarded[sig] = signal.signal(sig, forward)
        except (ValueError, OSError):  # not the main thread (an embedding runner): leave signals alone
            pass
    try:
        code = child.wait()
    finally:
        for sig, old in forwarded.items():
            signal.signal(sig, old)
    # Killed by a signal: report it the way a shell would.
    return 128 - code if code < 0 else code


def main(argv=None):
    """Run pfsync with `argv` (default: `sys.argv[1:]`). Returns on success; exits with pfsync's code else.

    This is the function a Databricks python_wheel_task calls (`package_name: pfsync`,
    `entry_point: main`), and `python -m pfsync`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    settings, args = split_settings(args)
    try:
        env, notes = child_environment(os.environ, settings)
        binary = find_pfsync_bin()
    except SecretError as e:
        print(f"pfsync: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except FileNotFoundError as e:
        print(f"pfsync: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
    for line in notes:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    code = run(binary, args, env)
    if code != 0:
        # A python_wheel_task fails on a non-zero SystemExit and succeeds when the function returns.
        sys.exit(code)
