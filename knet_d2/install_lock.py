"""The dependency lock that ``tools/install_deps.sh`` installs, and the decisions around it.

``requirements/lock.txt`` holds one ``name==version`` line per package the install script
puts into a fresh environment (torch and torchvision included). The script runs this file
**by path** with the target interpreter before knet_d2 (or even torch) is installed, so it
imports nothing but the standard library and never imports the ``knet_d2`` package.

* :func:`plan_constraints` — which pins the install applies. A fresh ``.venv`` gets the whole
  lock. In a user's own environment (``KNET_NO_VENV=1`` / ``KNET_SYSTEM_SITE_PACKAGES=1``) the
  lock only pins what is missing: packages already installed stay as they are, and torch /
  torchvision / detectron2 already installed are pinned to *their installed* version so that no
  other requirement can move them.
* :func:`compare_with_pins` — installed versions that differ from the pins (used by the install
  script's final check and by ``tests/test_install_lock.py``).
* the install stamp (a small JSON file): which lock, by SHA-256, the environment was installed
  from and with which pins; a changed lock makes ``make`` reinstall.
* :func:`newest_local_build` — the newest ``+cpu`` build of torch / torchvision (``make lock``).

Command line (used by the shell scripts; ``python knet_d2/install_lock.py -h``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

__all__ = [
    "LockError",
    "InstallPlan",
    "normalize_name",
    "parse_lock",
    "installed_versions",
    "plan_constraints",
    "compare_with_pins",
    "lock_sha256",
    "write_stamp",
    "read_stamp",
    "stamp_matches_lock",
    "newest_local_build",
    "format_lock",
]

STAMP_FORMAT = 1
# Packages a user typically brings built for their own CUDA / from source: once installed in a
# user's environment they are pinned to the installed version, never to the lock's.
USER_STACK = ("torch", "torchvision", "detectron2")
# torch and torchvision are released in lockstep (torchvision X requires torch ==Y): if the user
# owns one of them, the lock's pin of the other would force a different torch.
TORCH_FAMILY = ("torch", "torchvision")
# Installed by the script with its own pip call (``--target``, Python-3.10 wheel): excluded from
# the generic "re-install what drifted" step.
DETECTRON2_WHEEL = "sal-detectron2"
# Never written into a lock: the installer itself and the package being developed.
NOT_LOCKED = ("pip", "knet-d2")

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


class LockError(ValueError):
    """A lock or stamp file that cannot be used; the message names the file and the line."""


def normalize_name(name: str) -> str:
    """PEP 503 normalized distribution name (``Pillow`` -> ``pillow``, ``ml_dtypes`` ->
    ``ml-dtypes``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> Dict[str, str]:
    """Read a lock file: ``name==version`` per line, ``#`` comments and blank lines allowed.

    Returns ``{normalized name: version}``. Raises :class:`LockError` naming the file and line
    for anything else (a range, a URL, a duplicate), since a lock that is not exact is no lock.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise LockError(f"{path}: cannot read the lock file ({e.strerror})") from e
    pins: Dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise LockError(
                f"{path}:{number}: expected an exact pin 'name==version', got {raw.strip()!r}"
            )
        name = normalize_name(match.group(1))
        if name in pins:
            raise LockError(f"{path}:{number}: {name} is pinned twice")
        pins[name] = match.group(2)
    if not pins:
        raise LockError(f"{path}: the lock file pins no package")
    return pins


def installed_versions() -> Dict[str, str]:
    """``{normalized name: version}`` of every distribution visible to this interpreter (the
    first one on ``sys.path`` wins, as for imports)."""
    versions: Dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalize_name(name), dist.version)
    return versions


@dataclass
class InstallPlan:
    """What an install applies: ``pins`` go to pip as constraints (``-c``); ``kept`` are the
    user's own packages left at their installed versions (not compared with the lock)."""

    pins: Dict[str, str]
    kept: Dict[str, str] = field(default_factory=dict)

    def constraints_text(self) -> str:
        return "".join(f"{name}=={version}\n" for name, version in sorted(self.pins.items()))


def plan_constraints(
    lock: Mapping[str, str],
    installed: Mapping[str, str],
    user_env: bool,
    user_owned: Optional[Iterable[str]] = None,
    detectron2_elsewhere: bool = False,
) -> InstallPlan:
    """Decide which versions an install pins.

    Args:
        lock: the lock, ``{normalized name: version}``.
        installed: what the target interpreter has before the install.
        user_env: False for the project's own ``.venv`` (the whole lock applies); True for a
            user's environment (``KNET_NO_VENV=1``, ``KNET_SYSTEM_SITE_PACKAGES=1``).
        user_owned: names that belong to the user, from an earlier install's stamp; by default
            every lock package installed before the first install (a re-install after a lock
            change must still move what the script itself installed).
        detectron2_elsewhere: detectron2 is importable without the ``sal-detectron2`` wheel
            (a source build or checkout): the wheel is then neither installed nor pinned.
    """
    lock = {normalize_name(n): v for n, v in lock.items()}
    installed = {normalize_name(n): v for n, v in installed.items()}
    pins = dict(lock)
    kept: Dict[str, str] = {}
    if detectron2_elsewhere:
        pins.pop(DETECTRON2_WHEEL, None)
        kept["detectron2"] = installed.get("detectron2", "importable")
    if not user_env:
        return InstallPlan(pins, kept)
    if user_owned is None:
        owned = {name for name in lock if name in installed}
    else:
        owned = {normalize_name(n) for n in user_owned if normalize_name(n) in installed}
    owned |= {name for name in USER_STACK if name in installed}
    for name in sorted(owned):
        pins.pop(name, None)
        kept[name] = installed[name]
    if owned & set(TORCH_FAMILY):
        for name in TORCH_FAMILY:
            pins.pop(name, None)
    for name in USER_STACK:  # theirs, exactly: no other requirement may move them
        if name in installed and name in owned:
            pins[name] = installed[name]
    return InstallPlan(pins, kept)


def compare_with_pins(
    pins: Mapping[str, str], installed: Mapping[str, str], require_all: bool = True
) -> List[str]:
    """Human-readable differences between the pins and what is installed (empty: all match).

    ``require_all=False`` (a user's environment) tolerates pinned packages that are absent: the
    lock pins what gets installed, and nothing forces an unneeded package in.
    """
    problems = []
    for name, version in sorted(pins.items()):
        have = installed.get(normalize_name(name))
        if have is None:
            if require_all:
                problems.append(f"{name}: locked {version}, not installed")
        elif have != version:
            problems.append(f"{name}: locked {version}, installed {have}")
    return problems


def lock_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_stamp(stamp: Path, lock: Optional[Path], plan: Optional[InstallPlan], user_env: bool):
    """Record a finished install: the lock (path, SHA-256; None for ``KNET_LOCK=none``), the pins
    applied, the user's packages kept, and the interpreter prefix it applies to."""
    data = {
        "format": STAMP_FORMAT,
        "prefix": sys.prefix,
        "lock": None if lock is None else str(Path(lock).resolve()),
        "lock_sha256": None if lock is None else lock_sha256(lock),
        "user_env": user_env,
        "pins": {} if plan is None else dict(sorted(plan.pins.items())),
        "kept": {} if plan is None else dict(sorted(plan.kept.items())),
    }
    Path(stamp).write_text(json.dumps(data, indent=1) + "\n")


def read_stamp(stamp: Path) -> Optional[dict]:
    """The stamp's record, or None for a stamp without one (an empty stamp from an install that
    predates the lock). Raises :class:`LockError` for an unreadable record."""
    text = Path(stamp).read_text().strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LockError(f"{stamp}: not a knet_d2 install stamp ({e})") from e
    if not isinstance(data, dict) or data.get("format") != STAMP_FORMAT:
        raise LockError(f"{stamp}: unknown install stamp format")
    return data


def stamp_matches_lock(stamp: Path, lock: Optional[Path]) -> bool:
    """True when the stamp records an install from exactly this lock file (same content)."""
    try:
        data = read_stamp(stamp)
    except (OSError, LockError):
        return False
    if data is None:
        return False
    if lock is None:
        return data["lock"] is None
    return data["lock"] == str(Path(lock).resolve()) and data["lock_sha256"] == lock_sha256(lock)


def _release(version: str) -> tuple:
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def newest_local_build(versions: Iterable[str], local: str = "cpu") -> Optional[str]:
    """The newest of ``versions`` carrying the local label ``+<local>`` (e.g. ``2.13.0+cpu``),
    or None. Pre-releases are ignored."""
    candidates = [
        v for v in versions
        if v.endswith(f"+{local}") and re.fullmatch(r"[\d.]+", v.split("+", 1)[0])
    ]
    return max(candidates, key=_release, default=None)


def format_lock(versions: Mapping[str, str], header: str) -> str:
    """Lock file text for ``versions`` (sorted; pip and knet_d2 itself left out)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, version in sorted(versions.items()):
        if normalize_name(name) not in NOT_LOCKED:
            lines.append(f"{normalize_name(name)}=={version}")
    return "\n".join(lines) + "\n"


def _cmd_plan(args) -> int:
    lock = parse_lock(args.lock)
    installed = installed_versions()
    user_owned = None
    if args.user_env and args.stamp and Path(args.stamp).is_file():
        try:
            previous = read_stamp(args.stamp)
        except LockError:
            previous = None
        if previous is not None and previous.get("user_env"):
            user_owned = previous["kept"]
    plan = plan_constraints(lock, installed, args.user_env, user_owned,
                            args.detectron2_elsewhere)
    Path(args.out).write_text(plan.constraints_text())
    Path(args.out + ".json").write_text(json.dumps({"pins": plan.pins, "kept": plan.kept}))
    for name in USER_STACK:
        if name in plan.kept:
            print(f"[install] keeping your {name} {plan.kept[name]} (not pinned to the lock)")
    others = sorted(set(plan.kept) - set(USER_STACK))
    if others:
        print(f"[install] keeping {len(others)} more installed packages at their versions "
              f"(not pinned to the lock): {', '.join(others)}")
    return 0


def _load_plan(path: str) -> InstallPlan:
    data = json.loads(Path(path + ".json").read_text())
    return InstallPlan(data["pins"], data["kept"])


def _cmd_drift(args) -> int:
    """Print ``name==version`` for each pin installed at another version (and, in a fresh venv,
    each pin missing): what a ``pip install --no-deps`` must fix."""
    plan = _load_plan(args.plan)
    installed = installed_versions()
    for name, version in sorted(plan.pins.items()):
        if name == DETECTRON2_WHEEL or name in plan.kept:
            continue
        have = installed.get(name)
        if (have is None and not args.user_env) or (have is not None and have != version):
            print(f"{name}=={version}")
    return 0


def _cmd_finish(args) -> int:
    """Check the environment against the plan, then write the stamp (only if it matches)."""
    plan = _load_plan(args.plan) if args.plan else None
    if plan is not None:
        problems = compare_with_pins(plan.pins, installed_versions(), not args.user_env)
        if problems:
            print(f"[install] the environment does not match {args.lock}:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            return 1
    write_stamp(Path(args.stamp), None if plan is None else Path(args.lock), plan, args.user_env)
    return 0


def _cmd_check_stamp(args) -> int:
    return 0 if stamp_matches_lock(Path(args.stamp), Path(args.lock) if args.lock else None) else 1


def _cmd_newest_cpu(args) -> int:
    line = next((x for x in sys.stdin if x.startswith("Available versions:")), None)
    versions = [] if line is None else [v.strip() for v in line.split(":", 1)[1].split(",")]
    newest = newest_local_build(versions, args.local)
    if newest is None:
        return 1
    print(newest)
    return 0


def _cmd_freeze(args) -> int:
    Path(args.out).write_text(format_lock(installed_versions(), args.header))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="write the constraints an install applies")
    p.add_argument("--lock", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stamp", help="an earlier install's stamp (user environments)")
    p.add_argument("--user-env", action="store_true")
    p.add_argument("--detectron2-elsewhere", action="store_true")
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("drift", help="print the pins that are installed at another version")
    p.add_argument("--plan", required=True)
    p.add_argument("--user-env", action="store_true")
    p.set_defaults(func=_cmd_drift)
    p = sub.add_parser("finish", help="check the install against the plan, write the stamp")
    p.add_argument("--stamp", required=True)
    p.add_argument("--lock")
    p.add_argument("--plan")
    p.add_argument("--user-env", action="store_true")
    p.set_defaults(func=_cmd_finish)
    p = sub.add_parser("check-stamp", help="exit 0 when the stamp records this lock")
    p.add_argument("--stamp", required=True)
    p.add_argument("--lock")
    p.set_defaults(func=_cmd_check_stamp)
    p = sub.add_parser("newest-cpu", help="newest +cpu version in `pip index versions` (stdin)")
    p.add_argument("--local", default="cpu")
    p.set_defaults(func=_cmd_newest_cpu)
    p = sub.add_parser("freeze", help="write a lock of this interpreter's packages")
    p.add_argument("--out", required=True)
    p.add_argument("--header", default="")
    p.set_defaults(func=_cmd_freeze)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LockError as e:
        print(f"[install] {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
