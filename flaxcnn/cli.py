"""How every command starts and ends: process-wide settings, quiet logs, one-line errors.

Each command's module ends with ``cli.run(main)`` and its ``main`` calls ``start()`` first, so
training, evaluation, prediction and the size table run in the same process set-up whether or
not they are started from the shell.

A user's mistake or a failed run ends in one line on stderr, ``error: <message>``, with exit
status 2 for bad usage or config (``USAGE_ERRORS``, flag parsing included) and 1 for a run that
failed (``RUN_ERRORS``). Any other exception is a bug and shows its traceback. To see the
traceback of a user error too, pass ``--verbosity=1`` or set ``FLAXCNN_TRACEBACK=1``;
``--verbosity=1`` also brings back the library warnings ``start()`` filters.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback
from typing import Callable, NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from flaxcnn import checkpoint, malloc
from flaxcnn.config import ConfigError
from flaxcnn.convert.files import WeightsError
from flaxcnn.data.folders import DatasetError
from flaxcnn.studies.spec import StudyError

TRACEBACK_ENV = 'FLAXCNN_TRACEBACK'

# Bad usage or config: exit status 2.
USAGE_ERRORS = (app.UsageError, flags.Error, ConfigError)
# A run that failed for a reason the user can act on: exit status 1. OSError covers a missing
# dataset folder or workdir, no permission and a full disk; NoIntactCheckpointError is one.
RUN_ERRORS = (
    OSError,
    FloatingPointError,  # training diverged
    checkpoint.RunMismatchError,
    DatasetError,  # a folder in the wrong layout, a class without a readable image
    WeightsError,
    StudyError,
)

# (logger name, message fragment) of expected library warnings, dropped unless --verbosity>=1.
QUIET = (
    ('absl', 'did not provide metrics'),  # Orbax, at every mid-epoch save (none by design)
    ('absl', 'has no dataset_info.json'),  # TFDS, before a dataset is prepared
    ('absl', 'Using custom data configuration'),  # TFDS, for every non-registered config
    ('absl', 'Metadata file does not exist'),  # Orbax, about a file it no longer writes
    ('absl', 'Given directory is read only'),  # Orbax, for load_run's read-only manager
    ('absl', 'Failed to get item metadata'),  # Orbax, at a damaged checkpoint (we say which)
)


class _QuietFilter(std_logging.Filter):
    """Drops the records ``QUIET`` lists (installed on the loggers it names)."""

    def __init__(self, fragments: list[str]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: std_logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def start(verbosity: int = logging.WARNING) -> None:
    """One malloc arena, absl's verbosity (``verbosity`` unless ``--verbosity`` was given) and
    the expected library warnings (``QUIET``) dropped unless ``--verbosity`` is 1 or more.

    It must run before XLA starts its threads (the arena limit only binds threads that have not
    allocated yet); XLA creates its CPU client, and its threads, on first use, after this.
    """
    malloc.limit_arenas()
    if not flags.FLAGS['verbosity'].present:  # Orbax logs every save at INFO.
        logging.set_verbosity(verbosity)
    if _verbose():
        return
    for name in {name for name, _ in QUIET}:
        logger = std_logging.getLogger(name)
        if not any(isinstance(f, _QuietFilter) for f in logger.filters):
            logger.addFilter(_QuietFilter([fragment for n, fragment in QUIET if n == name]))
    _silence_tensorflow_banner()
    if not isinstance(sys.unraisablehook, _QuietUnraisableHook):
        sys.unraisablehook = _QuietUnraisableHook(sys.unraisablehook)


class _QuietUnraisableHook:
    """Drops the 'Event loop is closed' errors TensorStore's callbacks raise after Orbax gave
    up reading a damaged checkpoint (the read's own error is reported)."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
            self.hook(unraisable)


def _silence_tensorflow_banner() -> None:
    """TFDS prints a banner when it looks for TensorFlow, which flaxcnn never needs."""
    from tensorflow_datasets.core.utils import lazy_imports_utils

    for value in vars(lazy_imports_utils).values():
        if getattr(value, 'error_callback', None) is lazy_imports_utils.tf_error_callback:
            object.__setattr__(value, 'error_callback', None)  # its setattr would import it


def define_once(name: str, define: Callable[[], flags.FlagHolder]) -> flags.FlagHolder:
    """``define()``, unless a flag ``name`` exists: then a holder of that one. Commands share
    ``--config`` and ``--workdir``, and importing two command modules in one process (tests,
    a notebook) must not fail with a duplicate flag."""
    if name in flags.FLAGS:
        return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
    return define()


def config_flag() -> flags.FlagHolder:
    """``--config``, the experiment config file (with ``--config.FIELD=VALUE`` overrides).

    ml_collections reads the overrides from ``sys.argv`` when the flag is defined, so the
    spellings in ``FLAG_ALIASES`` are replaced there first."""
    sys.argv[:] = _with_aliases(sys.argv)
    return define_once(
        'config',
        lambda: config_flags.DEFINE_config_file(
            'config', None, 'Experiment config file, e.g. configs/glyph.py.', lock_config=True
        ),
    )


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with user errors reported in one line (see the module docstring)."""
    app.run(report_errors(main), flags_parser=_parse_flags)


def report_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """``main`` ending a user error (``USAGE_ERRORS``, ``RUN_ERRORS``) in ``error: <message>``
    and its exit status; other exceptions pass through."""

    def reporting_main(argv: list[str]) -> None:
        try:
            main(argv)
        except USAGE_ERRORS as e:
            _fail(e, 2)
        except RUN_ERRORS as e:
            _fail(e, 1)

    return reporting_main


# Flag spellings that ml_collections cannot parse, and the field each one sets: it reads a
# field path as Python, where ``from`` is a keyword.
FLAG_ALIASES = {'--config.init.from': '--config.init.source'}


def _with_aliases(argv: list[str]) -> list[str]:
    def spelled(arg: str) -> str:
        name, sep, value = arg.partition('=')
        return FLAG_ALIASES.get(name, name) + sep + value

    return [spelled(arg) for arg in argv]


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (unknown flags and config fields, bad values) reported like the rest."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(e, 2, show_traceback=False)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a missing field
        field = str(e).strip('"\'')
        given = [a.split('=')[0] for a in argv[1:] if f'.{field}' in a.split('=')[0]]
        _fail(
            app.UsageError(f'{given[0] if given else field}: the config has no field {field!r}.'),
            2,
            show_traceback=False,
        )


def _verbose() -> bool:
    return flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1


def _fail(error: BaseException, status: int, *, show_traceback: bool | None = None) -> NoReturn:
    if show_traceback is None:
        show_traceback = _verbose() or os.environ.get(TRACEBACK_ENV) == '1'
    if show_traceback:
        traceback.print_exception(error)
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(status)
