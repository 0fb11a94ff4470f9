import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host, check_np, is_valid_hostname, parse_host_list


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost:2", (Host("localhost", 2),)),
    ("a:2,b:4", (Host("a", 2), Host("b", 4))),
    ("node01", (Host("node01", 1),)),
    (" n1:1 , n2:3 ", (Host("n1", 1), Host("n2", 3))),
    ("10.0.0.5:8", (Host("10.0.0.5", 8),)),
    ("gpu-a1.cluster.example.org:4", (Host("gpu-a1.cluster.example.org", 4),)),
])
def test_parse_host_list(text, expected):
    assert parse_host_list(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("a:0", "0 slots"),
    ("a:-1", "bad slot count"),
    ("a:x", "bad slot count"),
    ("a:2,,b:2", "empty entry"),
    ("a:1,a:2", "listed twice"),
    ("a;touch /tmp/x:1", "not a valid hostname"),
    ("$(reboot):1", "not a valid hostname"),
    ("-oProxyCommand=x:1", "not a valid hostname"),
])
def test_parse_host_list_rejects(text, message):
    with pytest.raises(HvdtrainError, match=message.replace("$", r"\$")):
        parse_host_list(text)


@pytest.mark.parametrize(("name", "valid"), [
    ("node01", True), ("a.b-c.d", True), ("::1", True), ("127.0.0.2", True),
    ("", False), ("a b", False), ("a;b", False), ("-a", False), ("a\nb", False), ("x" * 64, False),
])
def test_is_valid_hostname(name, valid):
    assert is_valid_hostname(name) is valid


def test_check_np_names_both_numbers():
    with pytest.raises(HvdtrainError, match="-np 5 is more than the 4 slots"):
        check_np(5, (Host("a", 2), Host("b", 2)))
    with pytest.raises(HvdtrainError, match="-np 0"):
        check_np(0, (Host("a", 2),))
    check_np(4, (Host("a", 2), Host("b", 2)))


@pytest.mark.parametrize(("text", "expected"), [
    ("rack0_blade1:2", (Host("rack0_blade1", 2),)),
    ("[fe80::1]:2,b", (Host("fe80::1", 2), Host("b", 1))),
    ("fe80::1", (Host("fe80::1", 1),)),
])
def test_parse_host_list_real_world(text, expected):
    assert parse_host_list(text) == expected


@pytest.mark.parametrize("text", ["a:\u00b2", "a:\u0663", "a:\uff14"])
def test_parse_host_list_refuses_digits_that_are_not_ascii(text):
    with pytest.raises(HvdtrainError, match="bad slot count"):
        parse_host_list(text)
