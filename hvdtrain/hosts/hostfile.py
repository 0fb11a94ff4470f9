"""Hostfiles in the formats users have: parse any of them into hosts, write any of them back.

Formats: ``openmpi`` (also DeepSpeed's: ``host slots=N [max_slots=M]``, a bare ``host`` is one
slot), ``mpich`` (``host:N``), ``horovod`` (the one-line ``-H a:2,b:4`` list) and ``json``
(``[{"name": ..., "slots": ..., "max_slots": ...}]``). Comments (``#``) and blank lines are
allowed in the line formats; IPv6 addresses take brackets before ``:N`` (``[fe80::1]:4``).
Files are UTF-8 (a byte-order mark is fine). Every error names ``source:line``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import (
    Host,
    is_ipv6,
    is_valid_hostname,
    list_name,
    parse_host_list,
    reject_duplicates,
    split_name_slots,
    whole_number,
)

FORMATS = ("openmpi", "mpich", "horovod", "json")
_BRACKETED = re.compile(r"\s*\[([^\]\s]*)\]")


def _is_json(text: str) -> bool:
    """JSON starts with ``{`` or ``[``; a line that starts with a bracketed IPv6 host does not."""
    bracketed = _BRACKETED.match(text)
    return text.lstrip().startswith(("{", "[")) and not (bracketed and is_ipv6(bracketed.group(1)))


def _int_field(value: str, what: str, where: str) -> int:
    number = whole_number(value)
    if number is None:
        raise HvdtrainError(f"{where}: {what} must be a positive whole number, got {value!r}",
                            "write e.g. node01 slots=4")
    return number


def _make_host(name: str, slots: int, max_slots: int | None, where: str) -> Host:
    try:
        return Host(name, slots, max_slots)
    except HvdtrainError as exc:
        raise HvdtrainError(f"{where}: {exc.problem}", exc.hint) from None


def parse_line(line: str, where: str) -> Host | None:
    """One hostfile line in Open MPI (``host slots=N``) or MPICH (``host:N``) form; None if empty."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    first, options = words[0], words[1:]
    name, slots = split_name_slots(first)
    if not is_valid_hostname(name):
        raise HvdtrainError(f"{where}: {first!r} is not a valid hostname or IP address",
                            "one host per line: a name, then slots=N, e.g. node01 slots=4")
    if slots is not None and not options:
        return _make_host(name, _int_field(slots, "slots", where), None, where)
    fields = {"slots": "1", "max_slots": ""}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in fields:
            raise HvdtrainError(f"{where}: unknown keyword {option!r}",
                                "Open MPI hostfiles take 'slots=N' and 'max_slots=M' only")
        fields[key] = value
    max_slots = _int_field(fields["max_slots"], "max_slots", where) if fields["max_slots"] else None
    return _make_host(name, _int_field(fields["slots"], "slots", where), max_slots, where)


def parse_json_hosts(text: str, source: str) -> tuple[Host, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HvdtrainError(f"{source}:{exc.lineno}: invalid JSON ({exc.msg})",
                            'write [{"name": "node01", "slots": 4}, ...]') from None
    entries = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise HvdtrainError(f"{source}: expected a list of hosts", 'write [{"name": "node01", "slots": 4}]')
    hosts = []
    for index, entry in enumerate(entries):
        where = f"{source}: host #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
                set(entry) - {"name", "slots", "max_slots"}:
            raise HvdtrainError(f"{where}: expected name, slots and optional max_slots",
                                'write {"name": "node01", "slots": 4}')
        slots, max_slots = entry.get("slots", 1), entry.get("max_slots")
        if not _is_count(slots) or not (max_slots is None or _is_count(max_slots)):
            raise HvdtrainError(f"{where}: slots must be whole numbers, not {slots!r}", 'write "slots": 4')
        hosts.append(_make_host(entry["name"], slots, max_slots, where))
    return tuple(hosts)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no slot count


def _parse_lines(text: str, source: str) -> tuple[Host, ...]:
    """Open MPI and MPICH lines, one host each; a line with commas is a Horovod ``a:2,b:4`` list."""
    hosts: list[Host] = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{number}"
        content = line.split("#", 1)[0].strip()
        if "," in content:
            try:
                hosts += parse_host_list(content)
            except HvdtrainError as exc:
                raise HvdtrainError(f"{where}: {exc.problem}", exc.hint) from None
        elif (host := parse_line(line, where)) is not None:
            hosts.append(host)
    return tuple(hosts)


def parse_hostfile(text: str, source: str = "<hostfile>") -> tuple[Host, ...]:
    """Hosts from a hostfile in any supported format (JSON is recognized by how it starts)."""
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some Windows editors write
    hosts = parse_json_hosts(text, source) if _is_json(text) else _parse_lines(text, source)
    if not hosts:
        raise HvdtrainError(f"{source}: no hosts in the hostfile", "add one line per host: node01 slots=4")
    reject_duplicates(hosts, source)
    return hosts


def read_hostfile(path: Path) -> tuple[Host, ...]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HvdtrainError(f"cannot read hostfile {path}: {exc.strerror}", "check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HvdtrainError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})",
                            "a hostfile is plain text, one host per line: save it as UTF-8") from None
    return parse_hostfile(text, str(path))


def format_hosts(hosts: Sequence[Host], fmt: str) -> str:
    """Hosts written in one of ``FORMATS``."""
    if fmt == "openmpi":
        return "".join(f"{h.name} slots={h.slots}" + (f" max_slots={h.max_slots}" if h.max_slots else "") + "\n"
                       for h in hosts)
    if fmt == "mpich":
        return "".join(f"{list_name(h.name)}:{h.slots}\n" for h in hosts)
    if fmt == "horovod":
        return ",".join(f"{list_name(h.name)}:{h.slots}" for h in hosts) + "\n"
    if fmt == "json":
        entries = [{"name": h.name, "slots": h.slots, **({"max_slots": h.max_slots} if h.max_slots else {})}
                   for h in hosts]
        return json.dumps(entries, indent=2) + "\n"
    raise HvdtrainError(f"unknown hostfile format {fmt!r}", f"use one of {', '.join(FORMATS)}")
