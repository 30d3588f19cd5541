"""History readers: the documented formats (not only the given files), autodetection, errors."""

from __future__ import annotations

import msgspec
import pytest

from voprd.check.formats import HistoryParseError, detect_format, parse_history
from voprd.check.history import HistoryOp
from voprd.check.models import Operation


def test_etcd_tabs_spaces_nil_and_unknown_outcomes() -> None:
    text = (
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 1   :invoke   :write   3\n"
        "INFO jepsen.util -  2 :invoke :cas [3 4]\n"
        "\n"
        "INFO  jepsen.util - 0\t:ok\t:read\tnil\n"
        "INFO  jepsen.util - 1\t:info\t:write\t:timed-out\n"
        "INFO  jepsen.util - 2\t:fail\t:cas\t[3 4]\n"
        "INFO  jepsen.util - 3\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 3\t:fail\t:read\t:timed-out\n"
        "INFO  jepsen.util - 4\t:invoke\t:cas\t[1 2]\n"
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
    )
    history = parse_history(text, "x.log")
    assert history.format == "etcd"
    ops = {op.process: op for op in history.ops}
    assert ops[0] == Operation(process=0, f="read", output=None, call=1, ret=5, line=1)
    assert ops[1].unknown and ops[1].ret is None and ops[1].value == 3  # :info -> pending
    assert ops[2].output is False and (ops[2].expected, ops[2].value) == (3, 4)
    assert ops[3].unknown and ops[3].ret == 9  # timed-out read ends there, unknown
    assert ops[4].unknown and ops[4].ret is None  # open at the end of the file


def test_empty_file_is_its_own_format() -> None:
    assert detect_format("") == "empty"
    assert parse_history("\n  \n").ops == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\tx\n",
         2, "expected nil or an integer"),
        ("INFO  jepsen.util - 0\t:ok\t:read\tnil\n", 1, "no open call"),
        ("INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:invoke\t:read\tnil\n",
         2, "still open"),
        ("INFO  jepsen.util - 0\t:invoke\t:cas\t[1]\n", 1, "cas needs"),
        ("INFO  jepsen.util - 0\t:invoke\t:read\tnil\ngarbage\n", 2, "not a Jepsen etcd log line"),
        ('{:process 0, :type :invoke, :f :get, :key "a", :value nil}\n{:process 0 :type}\n',
         2, "cannot read the map"),
        ('{:process 0, :type :invoke, :f :frob, :key "a", :value nil}\n', 1, "unknown function"),
        ('{"process": 0, "op": "get", "call_us": 1}\n{"process": "x"}\n', 2, "process"),
        ('{"process": 0, "op": "put", "call_us": 1}\n', 1, "needs a value"),
        ("hello\n", 1, "cannot detect"),
    ],
)
def test_malformed_lines_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(HistoryParseError) as caught:
        parse_history(text, "h.txt")
    assert str(caught.value).startswith(f"h.txt:{line}: ")
    assert message in str(caught.value)
    assert caught.value.line == line


def test_kv_format_with_escapes_info_and_fail() -> None:
    text = (
        '{:process 0, :type :invoke, :f :append, :key "k", :value "a\\"b"}\n'
        '{:process 1, :type :invoke, :f :get, :key "k", :value nil}\n'
        '{:process 0, :type :ok, :f :append, :key "k", :value "a\\"b"}\n'
        '{:process 1, :type :ok, :f :get, :key "k", :value "a\\"b"}\n'
        '{:process 2, :type :invoke, :f :put, :key "j", :value "z"}\n'
        '{:process 2, :type :info, :f :put, :key "j", :value :timed-out}\n'
        '{:type :invoke, :process 3, :f :get, :key "j", :value nil}\n'
        '{:process 3, :type :fail, :f :get, :key "j", :value nil}\n'
    )
    history = parse_history(text)
    assert history.format == "kv"
    by_process = {op.process: op for op in history.ops}
    assert by_process[0].value == 'a"b' and by_process[1].output == 'a"b'
    assert by_process[2].unknown and by_process[2].ret is None
    assert by_process[3].unknown and by_process[3].ret == 8


def test_voprd_json_lines_round_trip_and_tie_order() -> None:
    records = [
        HistoryOp(process=0, op="put", key="a", value="1", call_us=10, return_us=20),
        HistoryOp(process=1, op="get", key="a", call_us=20, return_us=30, output="1"),
        HistoryOp(process=2, op="cas", key="a", expected="1", value="2", call_us=5),
    ]
    text = "\n".join(msgspec.json.encode(r).decode() for r in records) + "\n"
    history = parse_history(text)
    assert history.format == "voprd"
    put, get, cas = history.ops
    # Equal times: the call of the get is ordered before the return of the put (concurrent).
    assert get.call < put.ret
    assert cas.unknown and cas.ret is None
    assert (put.line, get.line, cas.line) == (1, 2, 3)
