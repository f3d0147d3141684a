# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""List and copy the bundled ``torchgeo fit/validate/test`` configs.

The repository's ``configs/`` folder is shipped in the wheel as package data
(``torchgeo_scalemae/configs``); from a clone or an editable install it is read from the
repository itself. The console script ``torchgeo-scalemae-config`` wraps :func:`main`:

.. code-block:: console

   $ torchgeo-scalemae-config list
   $ torchgeo-scalemae-config copy pretrain/quickstart .
   $ torchgeo fit --config quickstart.yaml

Names are paths below ``configs/`` with or without ``.yaml`` (``pretrain/quickstart``);
a bare file name (``quickstart``) works when only one config has it.
"""

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ('config_dir', 'copy_config', 'find_config', 'list_configs', 'main')

_SUFFIX = '.yaml'


def config_dir() -> Path:
    """Return the folder holding the bundled configs.

    Returns:
        ``torchgeo_scalemae/configs`` of an installed wheel, else the repository's
        ``configs/`` beside the package (a clone or an editable install).

    Raises:
        FileNotFoundError: if neither folder exists (a broken installation).
    """
    package = Path(__file__).resolve().parent
    for folder in (package / 'configs', package.parent / 'configs'):
        if folder.is_dir() and any(folder.rglob(f'*{_SUFFIX}')):
            return folder
    raise FileNotFoundError(
        f'no bundled configs found in {package / "configs"} or '
        f'{package.parent / "configs"}; reinstall torchgeo-scalemae'
    )


def list_configs() -> list[str]:
    """Return the names of the bundled configs.

    Returns:
        Sorted names relative to the config folder, without ``.yaml``, with ``/``
        separators (for example ``'pretrain/quickstart'``).
    """
    root = config_dir()
    return sorted(
        path.relative_to(root).with_suffix('').as_posix()
        for path in root.rglob(f'*{_SUFFIX}')
    )


def find_config(name: str) -> Path:
    """Return the file of a bundled config.

    Args:
        name: a name of :func:`list_configs`, with or without ``.yaml``, or a bare file
            name that only one config has (``'quickstart'``).

    Returns:
        The config file.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if ``name`` is empty, matches no config, or matches several.
    """
    if not isinstance(name, str):
        raise TypeError(f'name must be a config name (str), got {name!r}')
    key = name.strip().replace('\\', '/').removesuffix(_SUFFIX).strip('/')
    if not key:
        raise ValueError(f'name must name a config, got {name!r}')
    names = list_configs()
    matches = [n for n in names if n == key] or [
        n for n in names if n.rsplit('/', 1)[-1] == key
    ]
    if not matches:
        raise ValueError(f'no bundled config named {name!r}; available: {names}')
    if len(matches) > 1:
        raise ValueError(f'config name {name!r} is ambiguous: {matches}')
    return config_dir() / f'{matches[0]}{_SUFFIX}'


def copy_config(name: str, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy a bundled config to a file or into a folder.

    Args:
        name: the config (see :func:`find_config`).
        dest: a file path, or an existing folder (the config keeps its file name).
        overwrite: replace an existing file.

    Returns:
        The written file.

    Raises:
        TypeError: if ``dest`` is not a path or ``overwrite`` not a bool.
        FileExistsError: if the target exists and ``overwrite`` is False.
        FileNotFoundError: if the target's folder does not exist.
        ValueError: as :func:`find_config`.
    """
    source = find_config(name)
    if not isinstance(overwrite, bool):
        raise TypeError(f'overwrite must be True or False, got {overwrite!r}')
    if not isinstance(dest, (str, Path)) or not str(dest):
        raise TypeError(f'dest must be a file or folder path, got {dest!r}')
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not overwrite:
        raise FileExistsError(
            f'{target} exists; pass overwrite=True (--force) to replace it'
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f'folder {target.parent} does not exist (dest={dest!r})'
        )
    shutil.copyfile(source, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``torchgeo-scalemae-config list|show|copy``.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a bad name or destination.
    """
    parser = argparse.ArgumentParser(
        prog='torchgeo-scalemae-config',
        description='List, print or copy the bundled torchgeo-scalemae configs '
        '(run them with `torchgeo fit --config FILE`).',
    )
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('list', help='print the config names')
    show = commands.add_parser('show', help='print a config')
    show.add_argument('name')
    copy = commands.add_parser('copy', help='copy a config to a file or folder')
    copy.add_argument('name')
    copy.add_argument('dest', nargs='?', default='.')
    copy.add_argument('--force', action='store_true', help='replace an existing file')
    args = parser.parse_args(argv)
    try:
        if args.command == 'list':
            print('\n'.join(list_configs()))
        elif args.command == 'show':
            sys.stdout.write(find_config(args.name).read_text())
        else:
            print(copy_config(args.name, args.dest, overwrite=args.force))
    except (ValueError, OSError) as error:
        print(f'torchgeo-scalemae-config: error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
