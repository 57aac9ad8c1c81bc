"""Trials in MLflow: one run per trial, with its parameters, per-epoch metrics and dataset input.

Everything goes through an explicit `MlflowClient`, never MLflow's global active run, so several
trials can be logged from one process and nothing depends on hidden state.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, with the data module: not for a command that only reads MLflow
    from leanfit.data.sources import LoadedDataset


# MLflow's dataset table keeps 36 characters of digest; the full digest goes in a tag.
MLFLOW_DIGEST_CHARS = 32


def dataset_input(dataset: LoadedDataset, name: str, context: str = "train"):
    """The dataset as an MLflow `DatasetInput` carrying its digest and source."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    if "://" in dataset.source:
        with warnings.catch_warnings():
            # MLflow 3.17 registers its local-file source twice and warns of the "ambiguity"
            # on every file:// dataset (both candidates are the same class)
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            source = resolve_dataset_source(dataset.source)
    else:
        source = CodeDatasetSource({"loader": dataset.source})
    meta = MetaDataset(source, name=name, digest=dataset.digest[:MLFLOW_DIGEST_CHARS])
    return DatasetInput(meta._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def missing_sqlite_database(uri: str) -> str | None:
    """The file a `sqlite:///` tracking URI names where it does not exist (MLflow would create
    an empty database there on first use), for a command that only reads to say so first;
    None where it exists or the URI is not sqlite."""
    database = uri.removeprefix("sqlite:///")
    if database.startswith("file:"):  # SQLite's own URI form: its path before the options
        from urllib.parse import unquote

        database = unquote(database.removeprefix("file:").partition("?")[0])
    return database if database != uri and not Path(database).exists() else None


# The sqlite databases (absolute paths: `sqlite:///mlflow.db` names another one in each folder)
# this process has opened once (see `ready_database`)
_READY: set[str] = set()


def ready_database(uri: str) -> None:
    """Open a `sqlite:///` tracking database for the first time in this process under a lock
    that other leanfit processes on this machine take too. MLflow creates (or upgrades) the
    database's tables when it first opens it, with no guard between processes: two searches
    started together in a new folder both created them, and one ended in a traceback (`table
    latest_metrics already exists`). A database not there yet starts as a copy of one made
    once (`_copy_tables`). Nothing for other URIs (a server, or a database that guards its own
    migrations), nor where locks cannot work (see `leanfit.lock`)."""
    import hashlib
    import os
    import tempfile

    database = uri.removeprefix("sqlite:///")
    if database == uri or os.path.abspath(database) in _READY:
        return
    from mlflow import MlflowClient

    from leanfit import stopping
    from leanfit.lock import held_lock

    # beside no user file: in the temporary folder, one of 16 by the database's absolute path
    # (a file per database left thousands behind; two databases sharing one only take turns
    # being created), and the user's own (another user's file cannot be opened to lock)
    bucket = hashlib.sha256(os.path.abspath(database).encode()).hexdigest()[0]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    lock = Path(tempfile.gettempdir()) / f"leanfit-{user}-mlflow-{bucket}.lock"
    with held_lock(lock), stopping.held_off():  # waits; a Ctrl-C waits for the tables
        new = not Path(database).exists()
        if new:
            _copy_tables(database)
        try:
            MlflowClient(uri).search_experiments(max_results=1)  # opens the store: its tables
        except Exception as e:
            if new:  # made here and cut short: not left half-made for the next run to refuse
                for part in ("", "-journal", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(database + part)
            said = _sqlite_failure(e)
            if new and said == "disk I/O error" and _limited():  # (SQLite's word for EFBIG)
                import errno

                _not_made(database, OSError(errno.EFBIG, os.strerror(errno.EFBIG), database))
            if said is None and "already exists" in str(e):
                from leanfit.errors import LeanfitError

                raise LeanfitError(half_made(database, uri)) from None
            if said is None:
                raise
            from leanfit.errors import LeanfitError

            fix = (
                "name a new file or an MLflow database"
                if said == "file is not a database"
                else "check the path, its folder's and file's permissions and the disk"
            )
            raise LeanfitError(
                f"tracking: the sqlite database {database} ({uri}) could not be opened: {said}; "
                f"{fix} ({WHERE_URI})"
            ) from None
    _READY.add(os.path.abspath(database))


def _copy_tables(database: str) -> None:
    """Start a new sqlite tracking database as a copy of `_tables_template`: MLflow makes a new
    database's tables through its whole chain of migrations, about 1.5 s a database here (most of
    the time a test of a command takes, and the first run of each folder pays it), where a copy
    takes milliseconds. MLflow then opens the copy as a database of its own version and adds what
    depends on the place (the Default experiment, its artifact folder beside the current one).
    The copy appears whole or not at all (a link to a finished file, which no file made meanwhile
    is replaced by). Nothing where the template cannot be had or the path is not a plain file's
    (SQLite's `file:` form, options, `:memory:`): MLflow makes the tables itself, as before."""
    import os
    import shutil

    target = Path(database)
    if database.startswith("file:") or "?" in database or database == ":memory:":
        return
    if not target.parent.is_dir():
        return
    template = _tables_template()
    if template is None:
        return
    part = target.parent / f".{target.name}.{os.getpid()}.part"
    try:
        shutil.copyfile(template, part)
        os.link(part, target)
    except OSError as e:  # (a folder not writable, a file system without links: MLflow makes them)
        # a full disk, a file-size limit: MLflow's tables would stop too (said of the
        # database, not of the template copied; the part file is removed below)
        _not_made(database, OSError(e.errno, e.strerror, database))
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


def _not_made(database: str, error: OSError) -> None:
    """Refuse, in one line, a new database that the place would not let be written (a full
    disk, a file-size limit: see `write_refused`); nothing where it is another error."""
    from leanfit.errors import LeanfitError, write_refused

    refused = write_refused(error)
    if refused is not None:
        raise LeanfitError(
            f"tracking: the sqlite database {database} could not be made: {refused}, then run "
            "the command again; nothing was left"
        ) from None


def _limited() -> bool:
    """Whether this process has a file-size limit (`ulimit -f`)."""
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def _tables_template() -> Path | None:
    """An MLflow database with this MLflow version's tables and nothing in them that depends on
    its place (no experiment), made once per user and MLflow version in the user's cache folder
    ($XDG_CACHE_HOME/leanfit, else ~/.cache/leanfit: the user's own, not the shared temporary
    folder, where another user could leave a file of the same name); None where it cannot be
    made there."""
    import os
    import sqlite3

    import mlflow
    from mlflow import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError as DBError

    from leanfit.errors import LeanfitError
    from leanfit.lock import held_lock

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "leanfit"
    template = cache / f"mlflow-{mlflow.__version__}-tables.db"
    if _is_sqlite(template):
        return template
    # (a new name each time: MLflow keeps a store per URI, which would take a second file of
    # the same name for the one it made)
    making = cache / f".{template.name}.{os.getpid()}.{time.monotonic_ns()}.part"
    try:
        with held_lock(cache / "mlflow-tables.lock"):
            if _is_sqlite(template):  # (made by another process meanwhile)
                return template
            making.unlink(missing_ok=True)
            MlflowClient(f"sqlite:///{making}").search_experiments(max_results=1)
            with contextlib.closing(sqlite3.connect(making)) as con, con:
                con.execute("delete from experiments")
            os.replace(making, template)
    except (OSError, sqlite3.Error, LeanfitError, mlflow.exceptions.MlflowException, DBError):
        # (SQLAlchemy's own error: a file-size limit met while MLflow makes the tables)
        with contextlib.suppress(OSError):
            making.unlink()
        return None
    return template


def _is_sqlite(path: Path) -> bool:
    """Whether a file is there and starts as a SQLite database does (a template a crash or a
    full disk left empty or damaged is made again, not copied into a user's new database)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def half_made(database: str, uri: str) -> str:
    """What to say of a database whose tables MLflow stopped making (a version of leanfit that
    let Ctrl-C in then, or a crash): MLflow cannot finish them. One that holds no run yet is
    safe to delete."""
    import sqlite3

    runs = None
    read_only = f"file:{database}?mode=ro"
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(read_only, uri=True)) as con,
    ):
        (runs,) = con.execute("select count(*) from runs").fetchone()
    if runs == 0:
        fix = f"it holds no run: delete it (rm {database}) and run again"
    else:
        fix = "move it aside and run again with a new one, or name another (" + WHERE_URI + ")"
    return (
        f"tracking: the sqlite database {database} ({uri}) was left half-made (its tables' "
        f"creation was cut short, as by a Ctrl-C or a crash while it was new), and MLflow cannot "
        f"finish it; {fix}"
    )


# What SQLite says when its file cannot be opened or is not one of its databases
SQLITE_FILE_ERRORS = (
    "unable to open database file",
    "readonly database",
    "file is not a database",
    "disk I/O error",
    "database or disk is full",
)


def _sqlite_failure(e: BaseException | None) -> str | None:
    """SQLite's own words, where an exception (or its cause) is one of `SQLITE_FILE_ERRORS`, or
    the system's, where it is an OSError (MLflow making the database's folder)."""
    from leanfit.errors import causes

    for cause in causes(e):
        if isinstance(cause, OSError) and cause.strerror:
            return f"{cause.strerror}: {cause.filename}" if cause.filename else cause.strerror
        for words in SQLITE_FILE_ERRORS:
            if words in str(cause):
                return words
    return None


def database_refused(e: BaseException | None, go_on: str | None = None) -> str | None:
    """One line for a sqlite tracking database that refused a write in the middle of a command
    (SQLAlchemy's and MLflow's traceback before): locked by another process for longer than
    MLflow waits, not writable, or failing its writes (a file-size limit, a failing disk); each
    with its fix, and that the command goes on from what finished (`go_on`: how, where not the
    commands'). None for anything else."""
    import os

    from leanfit.errors import causes, file_size_limit

    words = next(
        (
            w
            for cause in causes(e)
            for w in ("database is locked", "readonly database", "disk I/O error")
            if w in str(cause)
        ),
        None,
    )
    if words is None:
        return None
    opened = sorted(_READY)  # (the sqlite databases this process opened)
    database = opened[0] if len(opened) == 1 else None
    if words == "disk I/O error" and database and not _writable(database):
        # (its folder made read-only between a journal's creation and its deletion: SQLite
        # says an I/O error, and the message sent the user to the disk and `dmesg`)
        words = "readonly database"
    name = (
        f"the sqlite tracking database {database}" if database else "the sqlite tracking database"
    )
    if words == "database is locked":
        holders = _holders(database) if database else []
        said = (
            f"{name} is locked: another process held its write lock for longer than MLflow "
            "waits (20 s)"
            + (f"; it is open in {', '.join(holders)}" if holders else "")
            + ". Let that process finish (or stop it)"
        )
    elif words == "readonly database":
        folder = os.path.dirname(database) if database else "its folder"
        said = (
            f"{name} cannot be written (attempt to write a readonly database): the file or its "
            f"folder is not writable (SQLite writes a journal beside it). Make both writable "
            f"(chmod u+w {database or 'FILE'} {folder}; a read-only file system remounted "
            "read-write)"
        )
    elif _limited():
        size = os.path.getsize(database) if database and os.path.exists(database) else None
        now = f"; the file is {size / 2**20:.1f} MiB" if size is not None else ""
        said = (
            f"{name} could not be written (disk I/O error): {file_size_limit()} stops it"
            f"{now}. Raise the limit (`ulimit -f unlimited`, or the limits of the service or "
            "container that runs leanfit)"
        )
    else:
        said = (
            f"{name} could not be written (disk I/O error): the disk or its file system "
            "failed a write (the kernel's log, `dmesg`, says which). Check the disk, or move "
            f"the database ({WHERE_URI})"
        )
    go_on = go_on or (
        "run the command again: `leanfit search FILE --resume` continues a search, `leanfit "
        "run FILE` a pipeline"
    )
    return f"tracking: {said}, then {go_on}, from what finished (SQLite kept every write that did)"


def release_interrupted_writes() -> None:
    """Roll back the sqlite transactions left open in this process by an interrupt raised in the
    middle of one (a second Ctrl-C leaves at once, wherever it lands: inside MLflow's write, its
    connection kept the database's write lock, and the search's own closing writes waited 20 s
    twice for this very process, then failed: "the database is locked", exit 2, once in about
    24 double Ctrl-Cs). What was not committed is lost, as the interrupt meant; a connection
    that is another thread's is left alone."""
    import gc
    import sqlite3

    for found in gc.get_objects():
        if issubclass(type(found), sqlite3.Connection):  # (not `isinstance`: it asks proxies)
            with contextlib.suppress(sqlite3.Error):  # (closed, or another thread's)
                if found.in_transaction:
                    found.rollback()


def _writable(database: str) -> bool:
    """Whether this process may write `database` and create files beside it (its journal)."""
    import os

    folder = os.path.dirname(database) or "."
    return os.access(folder, os.W_OK) and (
        not os.path.exists(database) or os.access(database, os.W_OK)
    )


def _holders(database: str) -> list[str]:
    """The other processes that have `database` open (`process PID (COMMAND)`), as far as this
    user may see them in /proc (Linux); none elsewhere."""
    import os

    found = []
    target = os.path.realpath(database)
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # (gone meanwhile, or another user's)
            continue
        found.append(f"process {pid} ({command[:80]})")
    return found[:3]


# Where the tracking URI is set, for messages: by the experiment file, or (`predict`, `promote`)
# by an option
WHERE_URI = "tracking.uri in the file, or $MLFLOW_TRACKING_URI"
WHERE_OPTION = "--tracking-uri, or $MLFLOW_TRACKING_URI"
# A database tracking store, by its URI's scheme less the driver
DATABASES = ("postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, where: str = WHERE_URI) -> None:
    """Refuse, in one line, a tracking URI MLflow would end on with a stack trace: a file store
    (`mlruns`, `file:///...`, or a mistyped scheme such as `http//host:5000`, which reads as a
    folder), which MLflow 3 refuses unless $MLFLOW_ALLOW_FILE_STORE is true, or a database whose
    driver is not installed. Nothing is imported for the usual sqlite and http(s) URIs."""
    import os
    from urllib.parse import urlparse

    from leanfit.errors import LeanfitError

    scheme = urlparse(uri).scheme.lower()
    engine = scheme.split("+")[0]  # postgresql+psycopg2: postgresql
    if uri in ("databricks", "databricks-uc"):  # a Databricks workspace, by its CLI profile
        return
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1"):
            return
        if not scheme and os.path.isfile(uri):  # (a file store is a folder)
            raise LeanfitError(
                f"tracking: {uri!r} is a file, not a tracking URI (one without a scheme names "
                f"MLflow's file store, a folder); for a sqlite database give sqlite:///{uri} "
                f"({where})"
            )
        typo = " (a mistyped scheme? it reads as a folder)" if not scheme and ":" in uri else ""
        raise LeanfitError(
            f"tracking: {uri!r} is MLflow's file store{typo}, which MLflow 3 refuses; use "
            f"sqlite:///mlflow.db (the default) or a server's http://HOST:5000 ({where}), "
            "or set MLFLOW_ALLOW_FILE_STORE=true to keep the file store"
        )
    if engine not in ("http", "https", "sqlite", *DATABASES):
        try:  # MLflow's own list, with any plugin's schemes; private, so only where it exists
            from mlflow.tracking._tracking_service.utils import _tracking_store_registry

            known = set(_tracking_store_registry._registry)
        except (ImportError, AttributeError):
            return
        if scheme not in known:
            raise LeanfitError(
                f"tracking: {uri!r} has a scheme MLflow does not know ({scheme}://); use "
                f"sqlite:///mlflow.db, http(s)://HOST:5000 or a database URI ({where})"
            )
        return
    if engine in ("http", "https"):
        parsed = urlparse(uri)
        try:
            port_ok = parsed.port is None or 0 < parsed.port < 65536
        except ValueError:  # (a port that is not a number: host:5123:5123)
            port_ok = False
        if not parsed.hostname or not port_ok:  # (http:/host:5000, http:///host: a traceback)
            raise LeanfitError(
                f"tracking: {uri!r} names no server (host and port); write it "
                f"{scheme}://HOST:PORT, e.g. {scheme}://127.0.0.1:5000 ({where})"
            )
        return
    if engine == "sqlite":
        _check_sqlite(uri, where)
        return
    if engine in DATABASES:
        from sqlalchemy.engine import make_url

        url = make_url(uri)
        try:
            url.get_dialect().import_dbapi()
        except ImportError as e:
            shown = url.render_as_string(hide_password=True)
            raise LeanfitError(
                f"tracking: {shown} needs its database driver, the Python module {e.name!r}, "
                "which is not installed here; install the driver, or use sqlite:///mlflow.db or "
                f"an MLflow server ({where})"
            ) from None


def _check_sqlite(uri: str, where: str = WHERE_URI) -> None:
    """A `sqlite:` URI that is not `sqlite:///PATH` (`sqlite:/m.db`, `sqlite://m.db`: a
    SQLAlchemy parse error or a host), or a database this process could not create or write:
    both ended in a SQLAlchemy traceback."""
    import os

    from leanfit.errors import LeanfitError

    database = uri.removeprefix("sqlite:///")
    if database == uri or not database or database.startswith("file:"):
        if uri.startswith("sqlite:///file:"):  # SQLite's own URI form, with options: as given
            return
        raise LeanfitError(
            f"tracking: {uri!r} is not a sqlite URI MLflow can open; write "
            f"sqlite:///mlflow.db (a path from the current folder, three slashes) or "
            f"sqlite:////abs/path/mlflow.db (four) ({where})"
        )
    if database == ":memory:":
        return
    if "%" in database or "?" in database:
        # SQLAlchemy reads them as a URL's escapes and query, MLflow's own folder-making does
        # not: `my%20dir/mlflow.db` was opened in "my dir" beside an empty "my%20dir", `q?dir/
        # mlflow.db` was a file named "q"; and the next command found no database
        options = "?" in database and "=" in database.partition("?")[2]
        raise LeanfitError(
            f"tracking: {uri!r}: "
            + (
                "options after ? are not taken in a sqlite tracking URI; write the path alone "
                "(sqlite:///mlflow.db)"
                if options
                else "a % or ? in a sqlite URI's path is read as a URL escape or a query "
                "(SQLAlchemy opens another file than MLflow makes folders for); write the path "
                "as it is, spaces included (sqlite:///my dir/mlflow.db), in a folder whose name "
                "has neither"
            )
            + f" ({where})"
        )
    if database == "~" or database.startswith("~/"):
        raise LeanfitError(
            f"tracking: {uri!r}: a ~ in a sqlite URI is not your home folder (it made a folder "
            f"named ~ here); write it out, e.g. sqlite:///{Path.home().as_posix()}/"
            f"{database[2:] or 'mlflow.db'} ({where})"
        )
    path = Path(database)
    if path.is_dir():
        raise LeanfitError(
            f"tracking: {uri!r} names a folder, {database}; name the database file in it, "
            f"e.g. sqlite:///{(path / 'mlflow.db').as_posix()} ({where})"
        )
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise LeanfitError(
                f"tracking: the database {database} of {uri!r} cannot be written by this user; "
                f"fix its permissions, or use another file ({where})"
            )
        with open(path, "rb") as handle:
            head = handle.read(16)
        if head and head != b"SQLite format 3\x00":  # an empty file is a new database
            raise LeanfitError(
                f"tracking: {database} of {uri!r} is not a SQLite database (it would be "
                f"left as it is); name a new file or an MLflow database ({where})"
            )
        return
    folder = path.absolute().parent  # MLflow creates the missing folders: the first that exists
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise LeanfitError(
            f"tracking: the database {database} of {uri!r} cannot be created: {folder} is not a "
            f"folder this user can write in; use a path under one ({where})"
        )


def check_tracking_reachable(uri: str, timeout: float = 10.0, where: str = WHERE_URI) -> None:
    """Say at once that the tracking URI cannot work (`check_tracking_uri`) or that an http(s)
    tracking server does not answer, before a command does any work: MLflow's client retries a
    refused connection for about four minutes before it gives up, which lets a running search
    ride over a server's restart, but leaves a user who mistyped the URI waiting. Any answer to
    MLflow's API but a 404 (an error page, a login) counts as reachable. `where`: where the URI
    was set, for the messages."""
    check_tracking_uri(uri, where)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    from leanfit.errors import LeanfitError

    check_http_settings()

    api = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        # some other web server on that port (a 404 for MLflow's API) is said as such rather
        # than, later, as MLflow not answering; a login or a proxy's refusal still passes
        found = requests.get(api, timeout=timeout, allow_redirects=False).status_code != 404
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise LeanfitError(
            f"tracking: MLflow at {uri} did not answer ({type(e).__name__}); check that the "
            f"server is up and the URI ({where}) is right"
        ) from None
    if not found:
        raise LeanfitError(
            f"tracking: {uri} answers, but no MLflow tracking server is there (GET "
            f"/api/2.0/mlflow/experiments/search: 404); check the host, port and path ({where})"
        )


def check_http_settings() -> None:
    """MLflow's settings of its HTTP requests from the environment (`MLFLOW_HTTP_REQUEST_*`: its
    retries, backoff, timeout), each read as MLflow reads it: a value it cannot read ended the
    first request to the server in a traceback (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.5: MLflow
    reads a whole number)."""
    import mlflow.environment_variables as settings

    from leanfit.errors import LeanfitError

    for name in sorted(vars(settings)):
        setting = getattr(settings, name)
        if not name.startswith("MLFLOW_HTTP_REQUEST_") or not hasattr(setting, "get"):
            continue
        try:
            setting.get()
        except ValueError:
            kind = {int: "a whole number", float: "a number"}.get(setting.type, setting.type)
            raise LeanfitError(
                f"environment: {name}={setting.get_raw()!r} is not {kind}, which MLflow reads "
                f"there; set it to one (MLflow's default: {setting.default}) or unset it"
            ) from None


# How often a search asks its tracking server whether it answers (seconds; the environment's
# LEANFIT_TRACKING_PROBE_SECONDS, for a test that cannot wait)
PROBE_EVERY = 10.0


@contextlib.contextmanager
def server_watched(uri: str, say, every: float | None = None):
    """Within: an http(s) tracking server that stops answering is said through `say`, and said
    again when it answers. A search's records wait for the server (MLflow's client retries a
    refused connection for about four minutes), and the search waited in silence, its progress
    line frozen. Asked every `every` seconds on a thread of its own; said after two unanswered
    asks in a row (a restart of a few seconds passes unsaid)."""
    if say is None or not uri.startswith(("http://", "https://")):
        yield
        return
    import os
    import threading
    from datetime import datetime

    import requests

    from leanfit.errors import hide_password

    every = every or float(os.environ.get("LEANFIT_TRACKING_PROBE_SECONDS", PROBE_EVERY))
    api = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    shown = hide_password(uri)
    stop = threading.Event()

    def answers() -> bool:
        try:  # any answer counts (an error page, a login): it is not down
            requests.get(api, timeout=max(every, 5.0), allow_redirects=False).close()
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            return False
        return True

    def watch() -> None:
        down_since, said = None, False
        while not stop.wait(every):
            if answers():
                if said:
                    gone = time.monotonic() - down_since[0]
                    say(f"tracking: MLflow at {shown} answers again (after {gone:.0f} s)")
                down_since, said = None, False
            elif down_since is None:
                down_since = (time.monotonic(), datetime.now().strftime("%H:%M:%S"))
            elif not said and not stop.is_set():
                said = True
                say(
                    f"tracking: MLflow at {shown} does not answer (since {down_since[1]}); the "
                    "search waits for it to record its results. MLflow's client retries for "
                    "about 4 minutes; then the search stops where its records are whole, and "
                    "`--resume` goes on"
                )

    thread = threading.Thread(target=watch, name="leanfit-tracking-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


@contextlib.contextmanager
def few_retries(retries: int = 1):
    """MLflow's HTTP retries cut to `retries`, with a short backoff, within: for a check whose
    failure is said at once. MLflow's own (about four minutes) let a long search ride over a
    tracking server's restart, and stay everywhere else."""
    import os

    settings = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    before = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def server_errors(e: BaseException | None) -> bool:
    """Whether MLflow's client gave up on a server that answered, with errors (HTTP 5xx), rather
    than on one that did not answer."""
    from leanfit.errors import causes

    return any("error responses" in str(cause) for cause in causes(e))


def is_tracking_failure(e: BaseException | None) -> bool:
    """Whether an exception (or its cause) is the MLflow tracking server not answering."""
    import requests
    from mlflow.exceptions import MlflowException

    from leanfit.errors import causes

    for cause in causes(e):
        if isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if isinstance(cause, MlflowException) and (
            "API request" in str(cause) or "Max retries" in str(cause) or "Connection" in str(cause)
        ):
            return True
    return False


def deleted_experiment(found, uri: str, when: str = "") -> str:
    """What to say of leanfit's MLflow experiment found deleted (the MLflow UI's Delete; `when`:
    said after "was deleted"). It was restored without a word before, its runs with it, so
    `leanfit run` said "up to date" on the records the user had just deleted; now the user
    chooses."""
    number = found.experiment_id
    if uri.startswith("sqlite:"):
        gc = f"`mlflow gc --backend-store-uri {uri} --tracking-uri {uri} --experiment-ids {number}`"
    else:  # (run where the server's database is: its --backend-store-uri)
        gc = f"`mlflow gc --experiment-ids {number}` with the server's database and URI"
    return (
        f"tracking: the MLflow experiment {found.name!r} was deleted{when} (in the MLflow UI, or "
        f"with its client), and leanfit does not bring it back by itself: restore it to go on with "
        f"its runs (`mlflow experiments restore --experiment-id {number}`), or purge it to start "
        f"afresh ({gc}: its runs and files are gone for good), or name another experiment "
        "(tracking.experiment in the file)"
    )


# the key of one create_run request (see `create_run_once`); on a twin, the run it duplicated
TAG_CREATE_KEY = "leanfit.create_key"
TAG_DUPLICATE_OF = "leanfit.duplicate_of"


def create_run_once(client, experiment_id: str, run_name: str, tags: Mapping[str, str]):
    """`client.create_run`, made once. MLflow's client sends a request again whose answer it
    did not get (a tracking server that stopped answering, or whose connection was cut, after
    it had made the run): the server then makes a second run, which stayed RUNNING for good
    beside the one the client got, with the same job tags (a search's job recorded twice). Each
    creation carries a key of its own; over HTTP, any other run with that key is deleted (it
    holds nothing but its tags), tagged with the run it duplicated."""
    import uuid

    key = uuid.uuid4().hex
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, TAG_CREATE_KEY: key})
    if str(client.tracking_uri).startswith(("http:", "https:")):
        twins = client.search_runs(
            [experiment_id], f"tags.`{TAG_CREATE_KEY}` = '{key}'", max_results=10
        )
        for twin in twins:
            if twin.info.run_id != run.info.run_id:
                client.set_tag(twin.info.run_id, TAG_DUPLICATE_OF, run.info.run_id)
                client.delete_run(twin.info.run_id)
    return run


def param_value(value: Any) -> str:
    """MLflow params are strings: JSON for anything that is not one already."""
    return value if isinstance(value, str) else json.dumps(value)


class TrialLogger:
    """Logs trials of one experiment to one tracking URI."""

    def __init__(self, tracking_uri: str, experiment_name: str):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        ready_database(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment_name)
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment_name)
        elif found.lifecycle_stage == "deleted":
            from leanfit.errors import LeanfitError

            raise LeanfitError(deleted_experiment(found, tracking_uri))
        else:
            self.experiment_id = found.experiment_id

    def start_trial(
        self,
        name: str,
        config: Mapping[str, Any],
        budget: Mapping[str, Any],
        dataset: LoadedDataset,
        dataset_name: str,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        from mlflow.entities import Param

        all_tags = {
            "leanfit.kind": "trial",
            "leanfit.dataset_digest": dataset.digest,
            **(tags or {}),
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = create_run_once(self.client, self.experiment_id, name, all_tags)
        run_id = run.info.run_id
        params = [Param(k, param_value(v)) for k, v in sorted(config.items())]
        params += [Param(f"budget.{k}", param_value(v)) for k, v in sorted(budget.items())]
        self.client.log_batch(run_id, params=params)
        self.client.log_inputs(run_id, datasets=[dataset_input(dataset, dataset_name)])
        return run_id

    def finish_trial(self, run_id: str, result) -> None:
        """Per-epoch metrics, cost, wall time and status of a finished (or failed) trial."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = epoch_metrics(result.history, now)
        metrics += [
            Metric("params", float(result.params), now, 0),
            Metric("macs", float(result.macs), now, 0),
            Metric("wall_time", float(result.wall_time), now, 0),
            Metric("train_time", float(result.train_time), now, 0),
        ]
        tags = {"leanfit.status": result.status}
        if result.reason:  # why it failed, or why its learning curve stopped it
            tags["leanfit.failure"] = result.reason[:5000]
        from mlflow.entities import RunTag

        for start in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, run_status(result.status))

    def close_interrupted(self, run_id: str, history: list[dict[str, float]]) -> None:
        """A trial stopped by Ctrl-C or SIGTERM: the epochs it finished, closed as KILLED."""
        metrics = epoch_metrics(history, int(time.time() * 1000))
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        self.client.set_tag(run_id, "leanfit.status", "interrupted")
        self.client.set_terminated(run_id, "KILLED")


def epoch_metrics(history: list[dict[str, float]], now: int) -> list:
    """A trial's per-epoch records as MLflow metrics, each at its epoch's step."""
    from mlflow.entities import Metric

    return [
        Metric(key, float(value), now, int(record["epoch"]))
        for record in history
        for key, value in record.items()
        if key != "epoch"
    ]


def runs_of_keys(
    logger: TrialLogger,
    where: str,
    tag: str,
    keys: str | Sequence[str] | None,
    max_results: int,
) -> list:
    """The runs matching `where` whose `tag` is one of `keys` (a key, several: the one made now
    and the one the version before made, or None: any), newest first."""
    runs = []
    for key in [keys] if keys is None or isinstance(keys, str) else keys:
        one = where if key is None else f"{where} and tags.`{tag}` = '{key}'"
        runs += logger.client.search_runs(
            [logger.experiment_id],
            filter_string=one,
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    return sorted(runs, key=lambda r: r.info.start_time, reverse=True)[:max_results]


def run_status(status: str) -> str:
    """The MLflow run status that closes a job of leanfit status `status`: FINISHED for a result
    (ok, or stopped by its learning curve), FAILED otherwise."""
    from mlflow.entities import RunStatus

    done = RunStatus.FINISHED if status in ("ok", "stopped") else RunStatus.FAILED
    return RunStatus.to_string(done)
