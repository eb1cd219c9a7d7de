"""gate/envfile.py reads EnvironmentFile= as systemd does; check-config uses it.

Most cases are systemd's own, from src/test/test-env-file.c (upstream main:
https://github.com/systemd/systemd/blob/main/src/test/test-env-file.c), with
their expected results.  The C string literals are kept as they are written
there, so the escapes mean the same in both languages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate import envfile
from gate.demo_world import World


def _load(text: str) -> list[str]:
    """``load_env_file()``'s result as systemd's tests spell it: ``KEY=value`` strings."""
    return [f"{k}={v}" for k, v in envfile.parse(text.encode()).variables.items()]


# --- systemd's test-env-file.c ---------------------------------------------------------


def test_systemd_load_env_file_1_continuations_escapes_and_later_wins() -> None:
    # TEST(load_env_file_1)
    env_file_1 = (
        "a=a\na=b\na=b\na=a\nb=b\\\nc\nd= d\\\ne  \\\nf  \ng=g\\ \nh= ąęół\\ śćńźżμ \ni=i\\"
    )
    assert _load(env_file_1) == ["a=a", "b=bc", "d=de  f", "g=g ", "h=ąęół śćńźżμ", "i=i"]


def test_systemd_load_env_file_2_escaped_newline_at_the_end() -> None:
    # TEST(load_env_file_2)
    assert _load("a=a\\\n") == ["a=a"]


def test_systemd_load_env_file_3_a_comment_ends_with_its_line() -> None:
    # TEST(load_env_file_3), systemd >= 254 (see gate/envfile.py's docstring)
    env_file_3 = (
        '#SPAMD_ARGS="-d --socketpath=/var/lib/bulwark/spamd \\\n'
        "#--nouser-config                                     \\\n"
        "normal1=line\\\n"
        "111\n"
        ";normal=ignored                                      \\\n"
        "normal2=line222\n"
        "normal ignored                                       \\\n"
    )
    assert _load(env_file_3) == ["normal1=line111", "normal2=line222"]


def test_systemd_load_env_file_4_double_quotes_keep_spaces() -> None:
    # TEST(load_env_file_4)
    env_file_4 = (
        "# Generated\n"
        "\n"
        'HWMON_MODULES="coretemp f71882fg"\n'
        "\n"
        "# For compatibility reasons\n"
        "\n"
        "MODULE_0=coretemp\n"
        "MODULE_1=f71882fg"
    )
    assert _load(env_file_4) == [
        "HWMON_MODULES=coretemp f71882fg",
        "MODULE_0=coretemp",
        "MODULE_1=f71882fg",
    ]


def test_systemd_load_env_file_5_empty_values() -> None:
    # TEST(load_env_file_5)
    assert _load("a=\nb=") == ["a=", "b="]


def test_systemd_load_env_file_6_escapes_in_each_quoting() -> None:
    # TEST(load_env_file_6)
    env_file_6 = (
        "a=\\ \\n \\t \\x \\y \\' \n"
        "b= \\$'                  \n"
        "c= ' \\n\\t\\$\\`\\\\\n"
        "'   \n"
        'd= " \\n\\t\\$\\`\\\\\n'
        '"   \n'
    )
    assert _load(env_file_6) == [
        "a= n t x y '",
        "b=$'",
        "c= \\n\\t\\$\\`\\\\\n",
        "d= \\n\\t$`\\\n",
    ]


@pytest.mark.parametrize("text", ["fo\ufffeo=bar", "foo=b\uffffar", "baz=hello world\ufffe"])
def test_systemd_load_env_file_invalid_utf8_refuses_the_file(text: str) -> None:
    # TEST(load_env_file_invalid_utf8): noncharacters are not valid UTF-8 to systemd
    with pytest.raises(envfile.EnvFileError, match="invalid UTF-8"):
        envfile.parse(text.encode())


def test_systemd_parse_env_file_whitespace_quotes_comments_and_export() -> None:
    # TEST(parse_env_file)
    text = (
        "one=BAR   \n"
        "# comment\n"
        " # comment \n"
        " ; comment \n"
        "  two   =   bar    \n"
        "invalid line\n"
        "invalid line #comment\n"
        'three = "333\n'
        'xxxx"\n'
        "four = '44\\\"44'\n"
        'five = "55\\"55" "FIVE" cinco   \n'
        "six = seis sechs\\\n"
        " sis\n"
        'seven="sevenval" #nocomment\n'
        "eight=eightval #nocomment\n"
        "export nine=nineval\n"
        "ten=ignored\n"
        "ten=ignored\n"
        "ten=\n"
        "eleven=\\value\n"
        'twelve="\\value"\n'
        "thirteen='\\value'"
    )
    # load_env_file() keeps "export nine" as a key ...
    assert [f"{k}={v}" for k, v in envfile.parse_assignments(text.encode())] == [
        "one=BAR",
        "two=bar",
        "three=333\nxxxx",
        'four=44\\"44',
        'five=55"55FIVEcinco',
        "six=seis sechs sis",
        "seven=sevenval#nocomment",
        "eight=eightval #nocomment",
        "export nine=nineval",
        "ten=ignored",
        "ten=ignored",
        "ten=",
        "eleven=value",
        "twelve=\\value",
        "thirteen=\\value",
    ]
    # ... and a unit never sees it: "export" is not special, the name is invalid
    loaded = envfile.parse(text.encode())
    assert "nine" not in loaded.variables
    assert loaded.ignored == ("export nine",)
    assert loaded.variables["ten"] == ""


def test_systemd_parse_multiline_env_file() -> None:
    # TEST(parse_multiline_env_file)
    text = (
        "one=BAR\\\n"
        "\\ \\ \\ \\ VAR\\\n"
        "\\\tGAR\n"
        "#comment\n"
        'two="bar\\\n'
        "    var\\\n"
        '\tgar"\n'
        "#comment\n"
        'tri="bar \\\n'
        "    var \\\n"
        '\tgar "\n'
    )
    assert _load(text) == [
        "one=BAR    VAR\tGAR",
        "two=bar    var\tgar",
        "tri=bar     var \tgar ",
    ]


# --- beyond systemd's cases ------------------------------------------------------------


def test_a_nul_byte_refuses_the_file() -> None:
    # read_full_stream_full() refuses embedded NULs when the caller takes a C string
    with pytest.raises(envfile.EnvFileError, match="NUL"):
        envfile.parse(b"A=1\nB=x\0y\n")


def test_invalid_utf8_in_a_comment_is_fine_but_not_in_a_value() -> None:
    assert envfile.parse(b"# \xff\xfe\nA=1\n").variables == {"A": "1"}
    with pytest.raises(envfile.EnvFileError, match=r":2: invalid UTF-8 in a value"):
        envfile.parse(b"A=1\nB=\xff\n")


def test_errors_never_quote_the_value() -> None:
    with pytest.raises(envfile.EnvFileError) as exc:
        envfile.parse("TOKEN=s3cret\ufffe\n".encode())
    assert "s3cret" not in str(exc.value)


def test_open_quotes_at_end_of_file_still_assign() -> None:
    assert envfile.parse(b'A="open to the end').variables == {"A": "open to the end"}
    assert envfile.parse(b"A='x\nB=y").variables == {"A": "x\nB=y"}


def test_names_systemd_refuses_are_ignored_not_fatal() -> None:
    # a line's first character always starts the key, even "=": "=e" assigns nothing
    # and "==x" assigns "x" to the key "="
    loaded = envfile.parse(b"1X=a\na-b=c\nOK_1=d\n=e\n==x\n")
    assert loaded.variables == {"OK_1": "d"}
    assert loaded.ignored == ("1X", "a-b", "=")


def test_quotes_open_only_at_the_start_of_a_value() -> None:
    # in the VALUE state quotes are literal; a shell would remove them
    assert envfile.parse(b"A=a\"b c\"d\nB=x 'y'\n").variables == {"A": 'a"b c"d', "B": "x 'y'"}


def test_a_missing_file_is_an_error() -> None:
    with pytest.raises(envfile.EnvFileError, match="cannot read"):
        envfile.load("/nonexistent/rpmgate.env")


# --- rpmgate check-config --env-file ---------------------------------------------------


def _config(tmp_path: Path, **overrides: Any) -> Path:
    doc = World(tmp_path / "world").config(**overrides)
    for project in doc["projects"].values():  # check-config looks at the repositories
        subprocess.run(["git", "init", "--quiet", "--bare", project["git"]], check=True)
    path = tmp_path / "rpmgate.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _check_config(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gate.cli", "check-config", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_check_config_expands_with_the_env_file_read_as_systemd_reads_it(tmp_path: Path) -> None:
    config = _config(tmp_path, auth={"api_tokens": ["${RPMGATE_TOKEN}"]})
    env_file = tmp_path / "rpmgate.env"
    # systemd keeps "$abcdefghijklmno" (16 characters, a valid token); `. file` in a
    # shell expands it to "" and the old validation refused a config systemd accepts
    env_file.write_text('RPMGATE_TOKEN="$abcdefghijklmno"\n')

    result = _check_config("-c", str(config), "--env-file", str(env_file))

    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


def test_check_config_refuses_a_value_systemd_would_cut_short(tmp_path: Path) -> None:
    config = _config(tmp_path, auth={"api_tokens": ["${RPMGATE_TOKEN}"]})
    env_file = tmp_path / "rpmgate.env"
    # unquoted trailing blanks are chomped: 15 characters are left, too short for a token
    env_file.write_text("RPMGATE_TOKEN=0123456789abcde      \n")

    result = _check_config("-c", str(config), "--env-file", str(env_file))

    assert result.returncode == 2
    assert "auth.api_tokens" in result.stderr
    assert "0123456789abcde" not in result.stderr + result.stdout


def test_check_config_does_not_see_variables_only_the_caller_has(tmp_path: Path) -> None:
    config = _config(tmp_path, auth={"api_tokens": ["${RPMGATE_TOKEN}"]})
    env_file = tmp_path / "rpmgate.env"
    env_file.write_text("# no token here\nexport RPMGATE_TOKEN=0123456789abcdef\n")
    caller = {"PATH": "/usr/bin:/bin", "RPMGATE_TOKEN": "0123456789abcdef"}

    result = _check_config("-c", str(config), "--env-file", str(env_file), env=caller)

    assert result.returncode == 2
    assert "environment variable RPMGATE_TOKEN is not set" in result.stderr
    # the ignored assignment is named, its value is not printed
    assert "'export RPMGATE_TOKEN'" in result.stderr
    assert "0123456789abcdef" not in result.stderr


def test_check_config_without_env_file_still_uses_the_callers_environment(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, auth={"api_tokens": ["${RPMGATE_TOKEN}"]})
    caller = {"PATH": "/usr/bin:/bin", "RPMGATE_TOKEN": "0123456789abcdef"}

    assert _check_config("-c", str(config), env=caller).returncode == 0


def test_check_config_reports_an_unreadable_env_file(tmp_path: Path) -> None:
    result = _check_config("-c", str(_config(tmp_path)), "--env-file", str(tmp_path / "missing"))

    assert result.returncode == 2
    assert "cannot read" in result.stderr
