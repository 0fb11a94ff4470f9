import re
from pathlib import Path

import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.hostfile import FORMATS, format_hosts, parse_hostfile, read_hostfile
from hvdtrain.hosts import Host, Slot, assign_ranks

EXAMPLES = Path(__file__).parent.parent / "hostfiles"


@pytest.mark.parametrize(("text", "expected"), [
    ("a slots=2\nb slots=4\n", (Host("a", 2), Host("b", 4))),
    ("# comment\n\n  a slots=2   # trailing\n", (Host("a", 2),)),
    ("a\nb slots=3\n", (Host("a", 1), Host("b", 3))),
    ("a slots=2 max_slots=4\n", (Host("a", 2, 4),)),
    ("a slots=2 max-slots=4\n", (Host("a", 2, 4),)),
    ("a:2\nb:1\n", (Host("a", 2), Host("b", 1))),
    ('[{"name": "a", "slots": 2}, {"name": "b"}]', (Host("a", 2), Host("b", 1))),
    ('{"hosts": [{"name": "a", "slots": 2, "max_slots": 3}]}', (Host("a", 2, 3),)),
])
def test_parse_hostfile_formats(text, expected):
    assert parse_hostfile(text, "hf") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("a slots=2\na slots=1\n", "host a is listed twice in hf"),
    ("a slots=0\n", "hf:1: host a has 0 slots"),
    ("a slots=-1\n", "hf:1: slots must be a positive whole number"),
    ("\nb slots=x\n", "hf:2: slots must be a positive whole number, got 'x'"),
    ("a slots=2 gpus=4\n", "hf:1: unknown keyword 'gpus=4'"),
    ("a slots=2 max_slots=1\n", "max_slots=1 below slots=2"),
    ("a;rm -rf / slots=1\n", "hf:1: 'a;rm' is not a valid hostname"),
    ("# only comments\n\n", "no hosts"),
    ("[{\"name\": \"a\", \"slots\": \"2\"}]", "slots must be whole numbers"),
    ("[{\"host\": \"a\"}]", "expected name, slots"),
    ("[1,", "hf:1: invalid JSON"),
    ("a:2:3\n", "hf:1: 'a:2:3' is not a valid hostname"),
])
def test_parse_hostfile_errors_name_the_line(text, message):
    with pytest.raises(HvdtrainError, match=re.escape(message)):
        parse_hostfile(text, "hf")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(fmt):
    hosts = (Host("node01", 4), Host("node02", 2, 8), Host("10.0.0.3", 1))
    text = format_hosts(hosts, fmt)
    expected = hosts if fmt in ("openmpi", "json") else tuple(Host(h.name, h.slots) for h in hosts)
    parsed = parse_hostfile(text, fmt) if fmt != "horovod" else parse_hostfile(text.replace(",", "\n"), fmt)
    assert parsed == expected


def test_shipped_examples_parse():
    assert read_hostfile(EXAMPLES / "localhost") == (Host("localhost", 2),)
    assert read_hostfile(EXAMPLES / "two-nodes") == (Host("node01", 4), Host("node02", 4))
    assert read_hostfile(EXAMPLES / "commented") == (Host("node01", 4), Host("node02", 4, 8), Host("node03", 2))


def test_read_hostfile_missing(tmp_path):
    with pytest.raises(HvdtrainError, match="cannot read hostfile"):
        read_hostfile(tmp_path / "nope")


def test_assign_ranks_by_slot():
    layout = assign_ranks((Host("a", 2), Host("b", 2)), 3)
    assert layout == [
        Slot(rank=0, local_rank=0, local_size=2, cross_rank=0, cross_size=2, host="a"),
        Slot(rank=1, local_rank=1, local_size=2, cross_rank=0, cross_size=1, host="a"),
        Slot(rank=2, local_rank=0, local_size=1, cross_rank=1, cross_size=2, host="b"),
    ]


def test_assign_ranks_by_node():
    layout = assign_ranks((Host("a", 2), Host("b", 2)), 4, by="node")
    assert [(s.rank, s.host, s.local_rank, s.cross_rank) for s in layout] == [
        (0, "a", 0, 0), (1, "b", 0, 1), (2, "a", 1, 0), (3, "b", 1, 1)]
    assert {s.local_size for s in layout} == {2} and {s.cross_size for s in layout} == {2}
