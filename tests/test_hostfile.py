import re
from pathlib import Path

import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host
from hvdtrain.hosts.hostfile import FORMATS, format_hosts, parse_hostfile, read_hostfile
from hvdtrain.hosts.layout import Slot, assign_ranks

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
    # Real-world inputs the parsers once got wrong (issue 12):
    # 1. Slurm node names with '_' (slurm.conf's example: rack[0-63]_blade[0-41])
    ("rack0_blade1 slots=2\n", (Host("rack0_blade1", 2),)),
    ("rack0_blade1:2\n", (Host("rack0_blade1", 2),)),
    # 2. the horovod format (-H a:2,b:2), as `hostfile convert --to horovod` writes it
    ("a:2,b:2\n", (Host("a", 2), Host("b", 2))),
    ("# from horovodrun\na:2, b\n", (Host("a", 2), Host("b", 1))),
    # 6. IPv6 hosts: bracketed before :N, bare alone, or with slots=
    ("[fe80::1]:4\n", (Host("fe80::1", 4),)),
    ("fe80::1\n", (Host("fe80::1", 1),)),
    ("fe80::1 slots=4\n", (Host("fe80::1", 4),)),
    ("[fe80::1]:4,[::1]:2\n", (Host("fe80::1", 4), Host("::1", 2))),
    # a UTF-8 byte-order mark
    ("\ufeffa slots=2\n", (Host("a", 2),)),
    ('\ufeff[{"name": "a"}]', (Host("a", 1),)),
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
    # 4. digits that are not ASCII: str.isdigit() says yes, int() says no
    ("a slots=\u00b2\n", "hf:1: slots must be a positive whole number, got '\u00b2'"),
    ("a:\u0663\n", "hf:1: slots must be a positive whole number"),
    ("a:2,b:\u00b2\n", "hf:1: bad slot count '\u00b2' for host 'b'"),
    # 5. JSON true is not a slot count
    ('[{"name": "a", "slots": true}]', "slots must be whole numbers, not True"),
    ('[{"name": "a", "slots": 2, "max_slots": false}]', "slots must be whole numbers"),
    ("fe80::1:4 slots=x\n", "hf:1: slots must be a positive whole number, got 'x'"),
])
def test_parse_hostfile_errors_name_the_line(text, message):
    with pytest.raises(HvdtrainError, match=re.escape(message)):
        parse_hostfile(text, "hf")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(fmt):
    hosts = (Host("node01", 4), Host("node02", 2, 8), Host("10.0.0.3", 1))
    text = format_hosts(hosts, fmt)
    expected = hosts if fmt in ("openmpi", "json") else tuple(Host(h.name, h.slots) for h in hosts)
    parsed = parse_hostfile(text, fmt)  # every format reads back as written, the horovod list included
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


@pytest.mark.parametrize("content", [
    b"a slots=2 # caf\xe9 (Latin-1)\n",  # 3. not UTF-8
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",  # 3. a gzip file
])
def test_a_hostfile_that_is_not_utf8_is_one_clear_error(tmp_path, content):
    path = tmp_path / "hosts"
    path.write_bytes(content)
    with pytest.raises(HvdtrainError, match=r"not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\)"):
        read_hostfile(path)


MIXED = (Host("node01", 2), Host("rack0_blade1", 4), Host("gpu1.cluster.example.org", 1), Host("fe80::1", 8),
         Host("10.0.0.5", 2), Host("::1", 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_ipv6_underscores_and_fqdns(fmt):
    assert parse_hostfile(format_hosts(MIXED, fmt), "hf") == MIXED


def test_ipv6_in_mpich_format_is_bracketed():
    assert format_hosts((Host("fe80::1", 4),), "mpich") == "[fe80::1]:4\n"  # not fe80::1:4, another host


def test_duplicate_check_is_linear():
    hosts = tuple(Host(f"n{index}", 1) for index in range(20_000))
    text = format_hosts(hosts, "openmpi")
    assert parse_hostfile(text, "big") == hosts  # quadratic took seconds at 10,000 lines; this is one pass
    with pytest.raises(HvdtrainError, match="host n0 is listed twice"):
        parse_hostfile(text + "n0\n", "big")
